/**
 * boot.grubConfig: the GRUB configuration written for the kernels installed
 * in the image's /boot (the Debian guest that virt-v2v converts,
 * src/export/v2v.test.ts, boots with it listed).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, symlink, writeFile, lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { renderGrubConfig, sortReleases, writeGrubConfig } from './grub-config.js';
import { validateBuildManifest } from './build-manifest.js';
import { hasCode, removeDir, tempDir } from '../testing/fixtures.js';

const uuid = '0b3f2c1e-1111-4222-8333-444455556666';

test('renders one entry per kernel, newest first, with the command line and initrd', () => {
  const text = renderGrubConfig({
    kernels: [{ release: '6.1.0-50-cloud-amd64', hasInitrd: true }, { release: '6.1.0-9-amd64', hasInitrd: false }],
    cmdline: 'console=ttyS0 root=/dev/nvme0n1p2 ro  init=/usr/local/sbin/hostme-init x=a;b',
    rootUuid: uuid,
    fallbackRoot: '(hd0,msdos2)',
  });
  assert.match(text, new RegExp(`search --no-floppy --fs-uuid --set=root ${uuid}\n`));
  assert.match(text, /set root=\(hd0,msdos2\)\n/);
  assert.match(text, /menuentry 'Linux 6\.1\.0-50-cloud-amd64' \{\n\tlinux \/boot\/vmlinuz-6\.1\.0-50-cloud-amd64 console=ttyS0 root=\/dev\/nvme0n1p2 ro init=\/usr\/local\/sbin\/hostme-init 'x=a;b'\n\tinitrd \/boot\/initrd\.img-6\.1\.0-50-cloud-amd64\n\}/);
  assert.match(text, /menuentry 'Linux 6\.1\.0-9-amd64' \{\n\tlinux [^\n]*\n\}/);
  assert.ok(text.indexOf('6.1.0-50') < text.indexOf('6.1.0-9-amd64'));
});

test('refuses a command line GRUB cannot hold', () => {
  const req = { kernels: [{ release: '1', hasInitrd: false }], rootUuid: uuid, fallbackRoot: '(hd0)' };
  assert.throws(() => renderGrubConfig({ ...req, cmdline: "a='b'" }), hasCode('build-manifest-invalid'));
  assert.throws(() => renderGrubConfig({ ...req, cmdline: 'a\nb' }), hasCode('build-manifest-invalid'));
});

test('sorts releases by their numbers', () => {
  assert.deepEqual(sortReleases(['6.1.0-9-amd64', '6.1.0-50-amd64', '5.10.0-30-amd64']), ['6.1.0-50-amd64', '6.1.0-9-amd64', '5.10.0-30-amd64']);
});

test('writes /boot/grub/grub.cfg from the tree, replacing a link instead of writing through it', async () => {
  const dir = await tempDir('grubcfg-');
  try {
    const root = join(dir, 'root');
    await mkdir(join(root, 'boot', 'grub'), { recursive: true });
    await writeFile(join(root, 'boot', 'vmlinuz-6.1.0-50-cloud-amd64'), 'k');
    await writeFile(join(root, 'boot', 'initrd.img-6.1.0-50-cloud-amd64'), 'i');
    await writeFile(join(root, 'boot', 'vmlinuz-6.1.0-49-cloud-amd64.dpkg-bak'), 'old');
    const outside = join(dir, 'outside');
    await writeFile(outside, 'keep');
    await symlink(outside, join(root, 'boot', 'grub', 'grub.cfg'));
    const owners = new Map();
    const kernels = await writeGrubConfig(root, owners, { cmdline: 'console=ttyS0', rootUuid: uuid, fallbackRoot: '(hd0,msdos2)' });
    assert.deepEqual(kernels, [{ release: '6.1.0-50-cloud-amd64', hasInitrd: true }]);
    assert.equal(await readFile(outside, 'utf8'), 'keep');
    assert.ok((await lstat(join(root, 'boot', 'grub', 'grub.cfg'))).isFile());
    assert.match(await readFile(join(root, 'boot', 'grub', 'grub.cfg'), 'utf8'), /linux \/boot\/vmlinuz-6\.1\.0-50-cloud-amd64 console=ttyS0\n/);
    assert.deepEqual(owners.get('/boot/grub/grub.cfg'), { uid: 0, gid: 0 });
  } finally {
    await removeDir(dir);
  }
});

test('an image without an installed kernel is refused', async () => {
  const dir = await tempDir('grubcfg-');
  try {
    await assert.rejects(writeGrubConfig(dir, new Map(), { cmdline: '', rootUuid: uuid, fallbackRoot: '(hd0)' }), hasCode('kernel-missing'));
  } finally {
    await removeDir(dir);
  }
});

test('the manifest field is a boolean', () => {
  const base = { name: 'g', version: '1', base: { debs: ['busybox-static'] } };
  const kernel = { debianPackage: 'linux-image-cloud-amd64' };
  assert.equal(validateBuildManifest({ ...base, boot: { kernel, bootloader: 'bios', grubConfig: true } }).boot?.grubConfig, true);
  assert.equal(validateBuildManifest({ ...base, boot: { kernel } }).boot?.grubConfig, false);
  assert.throws(() => validateBuildManifest({ ...base, boot: { kernel, grubConfig: 'yes' } }), /boot\.grubConfig: .*boolean/);
});
