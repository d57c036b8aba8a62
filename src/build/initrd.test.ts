/**
 * Generated initrds (boot.initrd: {modules}) and what they are made of:
 * module dependency order, the cpio itself (reproducible, sorted, pinned
 * times), static busybox detection, random filler files, and a whole build
 * from a small kernel package made here with dpkg-deb (no network, no QEMU;
 * the real Debian 686 kernel is built and booted in build.e2e.test.ts).
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { buildImage, validateBuildManifest } from './index.js';
import { hasElfInterpreter } from './boot.js';
import { moduleLoadOrder, type KernelModule } from './debian.js';
import { INITRD_INIT, makeInitrd } from './initrd.js';
import { writeRandomFile } from './random-file.js';
import { openRepository } from '../repo/repository.js';
import { hasCode, newKey, readBlob, removeDir, run, tempDir } from '../testing/fixtures.js';

const key = newKey();
const HOST_BUSYBOX = '/bin/busybox'; // Debian's busybox-static, a hostme dependency (scripts/setup.sh)

/** Bytes that look like a .ko to hostme: its modinfo strings (name=, depends=) are all it reads. */
function fakeModule(name: string, depends: string[]): Buffer {
  return Buffer.from(`\x7fELF-module\0license=GPL\0depends=${depends.join(',')}\0name=${name}\0vermagic=test\0`);
}

function modules(spec: Record<string, string[]>): Map<string, KernelModule> {
  return new Map(Object.entries(spec).map(([name, depends]) => [name, { name, imagePath: `/lib/modules/9.9.9-test/kernel/${name}.ko`, data: fakeModule(name, depends), depends }]));
}

/** `cpio -itv` of a gzip newc initrd: one line per entry. */
async function listInitrd(file: string): Promise<string[]> {
  const { stdout } = await run('bash', ['-c', `gzip -dc "$1" | cpio -itv --quiet`, 'list', file]);
  return stdout.trim().split('\n');
}

describe('boot.initrd in the manifest', () => {
  const minimal = { name: 'demo', version: '1', base: { dir: 'root' } };
  const packageKernel = { debianPackage: 'linux-image-686' };

  test('the generated form is validated with precise paths', () => {
    const ok = validateBuildManifest({ ...minimal, boot: { kernel: packageKernel, initrd: { modules: ['ata_piix', 'ext4'] } } });
    assert.deepEqual(ok.boot?.initrd, { modules: ['ata_piix', 'ext4'], busybox: 'busybox-static' });
    assert.equal(validateBuildManifest({ ...minimal, boot: { kernel: 'vmlinuz', initrd: 'initrd.img' } }).boot?.initrd, 'initrd.img', 'the path form still works');
    assert.throws(
      () => validateBuildManifest({ ...minimal, boot: { kernel: packageKernel, initrd: { modules: [], extra: 1 } } }, 'hostme.json'),
      hasCode('build-manifest-invalid', (m) => {
        assert.match(m, /boot\.initrd\.modules: must list at least one module/);
        assert.match(m, /boot\.initrd: unknown key "extra"/);
      }),
    );
    assert.throws(
      () => validateBuildManifest({ ...minimal, boot: { kernel: packageKernel, initrd: { modules: ['ext4', 'no/slash'], busybox: 'busybox-static:i386' } } }),
      hasCode('build-manifest-invalid', (m) => {
        assert.match(m, /boot\.initrd\.modules\[1\]: must be a module name/);
        assert.match(m, /boot\.initrd\.busybox: must be a Debian package name.*architecture follows hardware\.arch/);
      }),
    );
    assert.throws(
      () => validateBuildManifest({ ...minimal, boot: { kernel: 'vmlinuz', initrd: { modules: ['ext4'] } } }),
      hasCode('build-manifest-invalid', (m) => assert.match(m, /boot\.initrd: a generated initrd needs boot\.kernel to be \{"debianPackage": …\}/)),
    );
  });

  test('files take exactly one of src or random; random sizes are checked', () => {
    assert.throws(
      () => validateBuildManifest({ ...minimal, files: [{ dest: '/x' }, { src: 'a', random: { size: '1M', seed: 's' }, dest: '/y' }, { random: { size: 'lots', seed: '' }, dest: '/z' }] }),
      hasCode('build-manifest-invalid', (m) => {
        assert.match(m, /files\[0\]: needs exactly one of "src" or "random"/);
        assert.match(m, /files\[1\]: needs exactly one of "src" or "random"/);
        assert.match(m, /files\[2\]\.random\.size: must be a size like "24M"/);
        assert.match(m, /files\[2\]\.random\.seed: must not be empty/);
      }),
    );
  });
});

describe('module load order', () => {
  const kernel = (builtin: string[] = []) => ({
    source: 'linux-image-9.9.9-test_1_amd64.deb',
    modules: modules({ ext4: ['jbd2', 'mbcache', 'crc16'], jbd2: [], mbcache: [], crc16: [], sd_mod: ['scsi_mod', 't10_pi'], scsi_mod: ['scsi_common'], scsi_common: [], t10_pi: ['crc64_rocksoft'], crc64_rocksoft: ['crc64'], crc64: [], 'crc32c_generic': [] }),
    builtin: new Set(builtin),
    compressedModules: 0,
  });

  test('dependencies come first, each module once, in the order asked', () => {
    const order = moduleLoadOrder(['sd_mod', 'ext4', 'crc32c-generic', 'scsi_mod'], kernel()).map((m) => m.name);
    assert.deepEqual(order, ['scsi_common', 'scsi_mod', 'crc64', 'crc64_rocksoft', 't10_pi', 'sd_mod', 'jbd2', 'mbcache', 'crc16', 'ext4', 'crc32c_generic']);
  });

  test('built-in modules need no loading', () => {
    assert.deepEqual(moduleLoadOrder(['ext4'], kernel(['ext4'])), []);
    assert.deepEqual(moduleLoadOrder(['ext4'], kernel(['jbd2', 'crc16'])).map((m) => m.name), ['mbcache', 'ext4']);
  });

  test('an unknown module names itself, who needs it, and the kernel package', () => {
    assert.throws(() => moduleLoadOrder(['virtio_blk'], kernel()), hasCode('kernel-module-missing', (m) => assert.match(m, /kernel module virtio_blk is not in linux-image-9\.9\.9-test_1_amd64\.deb/)));
    const broken = kernel();
    broken.modules.delete('crc64');
    assert.throws(() => moduleLoadOrder(['sd_mod'], broken), hasCode('kernel-module-missing', (m) => assert.match(m, /crc64 \(needed by sd_mod → t10_pi → crc64_rocksoft\)/)));
  });
});

describe('initrd, random files and busybox checks', () => {
  let dir: string;
  before(async () => {
    dir = await tempDir('hostme-initrd-');
  });
  after(() => removeDir(dir));

  test('makeInitrd writes a reproducible gzip newc cpio: sorted entries, root-owned, pinned times, modules in load order', async () => {
    const busybox = await readFile(HOST_BUSYBOX);
    const order = moduleLoadOrder(['ext4'], { source: 'test', modules: modules({ ext4: ['jbd2', 'crc16'], jbd2: [], crc16: [] }), builtin: new Set(), compressedModules: 0 });
    const first = join(dir, 'a.img');
    const second = join(dir, 'b.img');
    const result = await makeInitrd({ busybox, modules: order, out: first, work: join(dir, 'w1') });
    const saved = process.umask(0o077); // a different umask must not change a byte
    try {
      await makeInitrd({ busybox, modules: order, out: second, work: join(dir, 'w2') });
    } finally {
      process.umask(saved);
    }
    const bytes = await readFile(first);
    assert.ok(bytes.equals(await readFile(second)), 'two builds, identical bytes');
    assert.equal(result.bytes, bytes.length);
    assert.deepEqual(result.modules, ['01-jbd2.ko', '02-crc16.ko', '03-ext4.ko']);
    assert.equal(bytes.readUInt32LE(4), 0, 'gzip -n: no time stamp in the header');
    assert.equal(bytes[3]! & 0x08, 0, 'gzip -n: no file name in the header');

    const lines = await listInitrd(first);
    const names = lines.map((l) => l.split(/\s+/).slice(8).join(' ').replace(/ -> .*/, ''));
    assert.deepEqual(names, ['bin', 'bin/busybox', 'bin/sh', 'dev', 'init', 'lib', 'lib/modules', 'lib/modules/01-jbd2.ko', 'lib/modules/02-crc16.ko', 'lib/modules/03-ext4.ko', 'lib/modules/order', 'newroot', 'proc', 'sys']);
    for (const line of lines) assert.match(line, /^\S+\s+\d+\s+root\s+root\s+\d+\s+Nov 14\s+2023 /, line);
    assert.match(lines.find((l) => l.endsWith(' init'))!, /^-rwxr-xr-x/);
    assert.match(lines.find((l) => l.includes('03-ext4.ko'))!, /^-rw-r--r--/);
    assert.match(lines.find((l) => l.includes('bin/sh'))!, /^lrwxrwxrwx.* bin\/sh -> busybox$/);

    const out = join(dir, 'extract');
    await mkdir(out);
    await run('bash', ['-c', 'cd "$1" && gzip -dc "$2" | cpio -id --quiet', 'extract', out, first]);
    assert.equal(await readFile(join(out, 'lib/modules/order'), 'utf8'), '01-jbd2.ko\n02-crc16.ko\n03-ext4.ko\n');
    assert.equal(await readFile(join(out, 'init'), 'utf8'), INITRD_INIT);
    assert.ok((await readFile(join(out, 'bin/busybox'))).equals(busybox));
    // The init script is valid sh (parsed, not run).
    await run('sh', ['-n', join(out, 'init')]);
  });

  test('random files: the same seed gives the same bytes, a different seed others, and gzip cannot shrink them', async () => {
    const [a, b, c] = ['a', 'b', 'c'].map((n) => join(dir, `random-${n}.bin`));
    await writeRandomFile(a!, 3 * 1024 * 1024 + 17, 'seed-1');
    await writeRandomFile(b!, 3 * 1024 * 1024 + 17, 'seed-1');
    await writeRandomFile(c!, 3 * 1024 * 1024 + 17, 'seed-2');
    const [da, db, dc] = await Promise.all([a!, b!, c!].map((f) => readFile(f)));
    assert.equal(da!.length, 3 * 1024 * 1024 + 17);
    assert.ok(da!.equals(db!));
    assert.ok(!da!.subarray(0, 4096).equals(dc!.subarray(0, 4096)));
    assert.ok(gzipSync(da!).length > da!.length * 0.99, 'incompressible');
  });

  test('a dynamically linked busybox is told apart from a static one', async () => {
    assert.equal(hasElfInterpreter(await readFile(HOST_BUSYBOX)), false);
    assert.equal(hasElfInterpreter(await readFile('/bin/ls')), true);
  });
});

/** A Debian package made with dpkg-deb from files (image path → content), named like apt names its downloads. */
async function makeDeb(at: string, pkg: string, version: string, files: Record<string, Buffer | string>): Promise<string> {
  const tree = join(at, `${pkg}-tree`);
  await mkdir(join(tree, 'DEBIAN'), { recursive: true });
  await writeFile(join(tree, 'DEBIAN', 'control'), `Package: ${pkg}\nVersion: ${version}\nArchitecture: amd64\nMaintainer: hostme tests <tests@invalid>\nDescription: test package\n`);
  for (const [file, content] of Object.entries(files)) {
    await mkdir(join(tree, file, '..'), { recursive: true });
    await writeFile(join(tree, file), content);
    await chmod(join(tree, file), file.endsWith('busybox') ? 0o755 : 0o644);
  }
  const deb = join(at, `${pkg}_${version}_amd64.deb`);
  await run('dpkg-deb', ['--root-owner-group', '-Zgzip', '-b', tree, deb]);
  return deb;
}

describe('buildImage with a generated initrd (a small kernel package made here)', () => {
  let dir: string;
  const release = '9.9.9-test';
  before(async () => {
    dir = await tempDir('hostme-initrd-build-');
    const debs = join(dir, 'cache', 'debs');
    await mkdir(debs, { recursive: true });
    const kernelFiles: Record<string, Buffer | string> = {
      [`boot/vmlinuz-${release}`]: Buffer.from('not really a bzImage, never booted here'),
      [`lib/modules/${release}/modules.builtin`]: 'kernel/fs/mbcache.ko\n',
    };
    for (const [name, deps, sub] of [['ext4', ['jbd2', 'mbcache'], 'fs/ext4'], ['jbd2', [], 'fs/jbd2'], ['ata_piix', ['libata'], 'drivers/ata'], ['libata', [], 'drivers/ata']] as const) {
      kernelFiles[`lib/modules/${release}/kernel/${sub}/${name}.ko`] = fakeModule(name, [...deps]);
    }
    await makeDeb(debs, `linux-image-${release}`, '1', kernelFiles);
    await makeDeb(debs, 'busybox-static', '99', { 'bin/busybox': await readFile(HOST_BUSYBOX) });
    await makeDeb(debs, 'busybox', '99', { 'bin/busybox': await readFile('/bin/ls') }); // stands in for a dynamically linked busybox
    await mkdir(join(dir, 'm', 'root', 'etc'), { recursive: true });
    await writeFile(join(dir, 'm', 'root', 'etc', 'motd'), 'hi\n');
  });
  after(() => removeDir(dir));

  async function build(label: string, boot: Record<string, unknown>) {
    const manifest = join(dir, 'm', `${label}.json`);
    await writeFile(manifest, JSON.stringify({ name: 'initrd-demo', version: '1', base: { dir: 'root' }, boot, hardware: { diskSize: '8M' } }));
    return buildImage({ manifestPath: manifest, repoDir: join(dir, `repo-${label}`), key, workDir: join(dir, 'work'), cacheDir: join(dir, 'cache'), outDir: join(dir, `out-${label}`) });
  }
  const kernel = { debianPackage: `linux-image-${release}`, extract: 'bzImage' };

  test('the initrd holds the package modules in dependency order (built-ins left out) and is published with the image', async () => {
    const result = await build('ok', { kernel, initrd: { modules: ['ata_piix', 'ext4'], busybox: 'busybox-static=99' }, cmdline: 'console=ttyS0 root=/dev/sda' });
    const files = result.outFiles!;
    assert.equal(files.cmdline, 'console=ttyS0 root=/dev/sda');
    const names = (await listInitrd(files.initrd!)).map((l) => l.split(/\s+/).slice(8).join(' '));
    assert.deepEqual(names.filter((n) => n.startsWith('lib/modules/')), ['lib/modules/01-libata.ko', 'lib/modules/02-ata_piix.ko', 'lib/modules/03-jbd2.ko', 'lib/modules/04-ext4.ko', 'lib/modules/order']);
    const repo = openRepository(join(dir, 'repo-ok'));
    const { manifest } = await repo.loadImage('initrd-demo', '1');
    assert.equal(manifest.boot.mode, 'direct');
    assert.ok(manifest.boot.mode === 'direct' && manifest.boot.initrd, 'the manifest names the initrd');
    if (manifest.boot.mode === 'direct' && manifest.boot.initrd) {
      assert.ok(Buffer.from((await readBlob(repo, manifest.boot.initrd)).data).equals(await readFile(files.initrd!)));
    }
    const again = await build('again', { kernel, initrd: { modules: ['ata_piix', 'ext4'], busybox: 'busybox-static=99' }, cmdline: 'console=ttyS0 root=/dev/sda' });
    assert.ok((await readFile(again.outFiles!.initrd!)).equals(await readFile(files.initrd!)), 'the same inputs give the same initrd bytes');
    assert.equal(again.diskSha256, result.diskSha256);
    assert.equal((await stat(files.disk)).size, 8 * 1024 * 1024);
  });

  test('an unknown module names the module and the kernel package; a dynamic busybox is refused', async () => {
    await assert.rejects(
      build('unknown', { kernel, initrd: { modules: ['ext4', 'nvme'], busybox: 'busybox-static=99' } }),
      hasCode('kernel-module-missing', (m) => assert.match(m, new RegExp(`kernel module nvme is not in linux-image-${release}_1_amd64\\.deb`))),
    );
    await assert.rejects(build('dynamic', { kernel, initrd: { modules: ['ext4'], busybox: 'busybox=99' } }), hasCode('initrd-invalid', (m) => assert.match(m, /dynamically linked.*busybox-static/)));
  });
});
