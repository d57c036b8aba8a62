import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import tar from 'tar-stream';
import { isHostmeError } from '../errors.js';
import { packWithNewKey } from '../testing/fixtures.js';
import type { VmDisk } from '../vm/qemu.js';
import { kernelIdentity } from './boot-kit.js';
import { classifySectorZero } from './bootloader.js';
import { exportImage, type ExportResult } from './export-image.js';
import { bootExportToReady, guestDebCache, ovmfArgs, packSmallImage, type SmallImage } from './test-fixture.js';

const DISK = 64 * 1024 * 1024;

async function firstMember(ova: string, suffix: string, out: string): Promise<string> {
  const extract = tar.extract();
  createReadStream(ova).pipe(extract);
  for await (const entry of extract) {
    if (entry.header.name.endsWith(suffix)) {
      const parts: Buffer[] = [];
      for await (const chunk of entry) parts.push(chunk as Buffer);
      await writeFile(out, Buffer.concat(parts));
    } else entry.resume();
  }
  return out;
}

function mbrWith(types: number[]): Buffer {
  const s = Buffer.alloc(512);
  types.forEach((t, i) => (s[446 + i * 16 + 4] = t));
  s[510] = 0x55;
  s[511] = 0xaa;
  return s;
}

describe('exports of direct-boot images carry a BIOS bootloader', () => {
  let img: SmallImage;
  let outDir: string;
  const exports = new Map<string, ExportResult>();
  const exported = async (format: string) => {
    const known = exports.get(format);
    if (known) return known;
    const result = await exportImage({ repo: img.repoDir, name: img.name, format, to: join(outDir, format), cacheDir: guestDebCache() });
    exports.set(format, result);
    return result;
  };

  before(async () => {
    img = await packSmallImage();
    outDir = join(img.dir, 'out');
    await mkdir(outDir);
  });
  after(async () => img?.cleanup());

  test('sector 0: bare file system and MBR with a free slot accepted; GPT, full table and foreign data refused', () => {
    assert.deepEqual(classifySectorZero(Buffer.alloc(512)), { kind: 'bare' });
    assert.deepEqual(classifySectorZero(mbrWith([0x83, 0x83])), { kind: 'mbr', freeSlot: 3 });
    const refused = (sector: Buffer, why: RegExp) => assert.throws(() => classifySectorZero(sector), (err: unknown) => isHostmeError(err, 'export-disk-unbootable') && why.test(err.message));
    refused(mbrWith([0xee]), /GPT/);
    refused(mbrWith([0x83, 0x83, 0x83, 0x83]), /four primary/);
    const xfs = Buffer.alloc(512);
    xfs.write('XFSB');
    refused(xfs, /sector 0 .* in use/);
  });

  test('kernel banners name the release and the Debian version (ELF and bzImage)', async () => {
    const id = kernelIdentity(await readFile(img.guest.kernel));
    assert.match(id.release ?? '', /^\d+\.\d+\.\d+-\d+-cloud-amd64$/);
    assert.match(id.debianVersion ?? '', /^\d+\.\d+/);
    const bz = Buffer.alloc(0x400);
    bz.write('HdrS', 0x202, 'latin1');
    bz.writeUInt16LE(0x100, 0x20e);
    bz.write('6.1.0-9-amd64 (x@y) #1 SMP Debian 6.1.27-1 (2023-05-08)\0', 0x300, 'latin1');
    assert.deepEqual(kernelIdentity(bz), { release: '6.1.0-9-amd64', debianVersion: '6.1.27-1' });
    assert.deepEqual(kernelIdentity(Buffer.from('no banner here')), {});
  });

  test('raw: the root file system is untouched (all but sector 0), the boot partition is appended and active', async () => {
    const result = await exported('raw');
    assert.equal(result.boot, 'syslinux');
    assert.ok(result.diskSize > DISK && result.diskSize % (1024 * 1024) === 0);
    const file = result.files[0]!.url;
    const [exportedBytes, original] = [await readFile(file), await readFile(img.guest.disk)];
    assert.ok(exportedBytes.subarray(512, DISK).equals(original.subarray(512, DISK)), 'the file system bytes are the published ones');
    const entry = exportedBytes.subarray(446, 462);
    assert.equal(entry[0], 0x80, 'active');
    assert.equal(entry[4], 0x0e, 'FAT16 LBA');
    assert.equal(entry.readUInt32LE(8) * 512, DISK, 'starts right after the file system');
    assert.equal(exportedBytes.readUInt16LE(510), 0xaa55);
    const fat = exportedBytes.subarray(DISK, DISK + 512);
    assert.equal(fat.toString('latin1', 3, 11), 'SYSLINUX', 'syslinux boot sector');
  });

  test('an ELF kernel that no Debian package matches: a clear error, nothing left behind', async () => {
    const dir = join(img.dir, 'foreign');
    await mkdir(dir);
    const kernel = join(dir, 'vmlinux');
    await writeFile(kernel, Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46]), Buffer.alloc(4096, 1)]));
    await packWithNewKey(dir, join(dir, 'repo'), { disk: img.guest.disk, name: 'foreign', version: '1', kernel, cmdline: 'console=ttyS0', memoryMiB: 128, cpus: 1 });
    await assert.rejects(
      exportImage({ repo: join(dir, 'repo'), name: 'foreign', format: 'qcow2', to: join(dir, 'out'), cacheDir: guestDebCache() }),
      (err: unknown) => isHostmeError(err, 'export-kernel-unbootable') && /ELF vmlinux/.test(err.message) && /--no-bootloader|bzImage/.test(err.message),
    );
    assert.deepEqual(await readdir(join(dir, 'out')).catch(() => []), [], 'nothing stored');
  });

  test('UEFI (OVMF): the qcow2 export boots through GRUB in the same boot partition, no -kernel', { timeout: 400_000 }, async () => {
    const result = await exported('qcow2');
    const vm = await bootExportToReady('UEFI qcow2', img.guest, {
      firmwareBoot: true,
      disks: [{ file: result.files[0]!.url, format: 'qcow2' }],
      extraArgs: await ovmfArgs(),
      timeoutMs: 240_000,
    });
    assert.match(vm.console, /BdsDxe: starting Boot\d+ "UEFI[^"]*"/, 'OVMF started a UEFI boot option');
    assert.match(vm.console, /Welcome to GRUB/);
    await vm.exited;
  });

  // One TCG boot per format, through SeaBIOS from the exported file alone: no -kernel.
  test('qcow2, vmdk, vdi, vhd, vhdx and ova exports boot to HOSTME-READY with no -kernel (6 QEMU boots)', { timeout: 900_000 }, async () => {
    const cases: Array<{ format: string; qemu: VmDisk['format']; file?: (url: string) => Promise<string> }> = [
      { format: 'qcow2', qemu: 'qcow2' },
      { format: 'vmdk', qemu: 'vmdk' },
      { format: 'vdi', qemu: 'vdi' },
      { format: 'vhd', qemu: 'vpc' },
      { format: 'vhdx', qemu: 'vhdx' },
      { format: 'ova', qemu: 'vmdk', file: (url) => firstMember(url, '.vmdk', join(outDir, 'from-ova.vmdk')) },
    ];
    for (const c of cases) {
      const result = await exported(c.format);
      assert.equal(result.boot, 'syslinux', c.format);
      const file = c.file ? await c.file(result.files[0]!.url) : result.files[0]!.url;
      const vm = await bootExportToReady(c.format, img.guest, {
        firmwareBoot: true,
        // streamOptimized VMDKs (inside the OVA) are read-only to QEMU; the guest mounts its root read-only anyway.
        disks: [{ file, format: c.qemu, readOnly: c.format === 'ova' }],
        timeoutMs: 240_000,
      });
      await vm.exited;
    }
  });
});
