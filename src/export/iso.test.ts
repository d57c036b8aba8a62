import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { isHostmeError } from '../errors.js';
import { exportImage, type ExportResult } from './export-image.js';
import { checkSiteReference, rootOffset } from './iso.js';
import { bootExportToReady, guestDebCache, ovmfArgs, packSmallImage, type SmallImage } from './test-fixture.js';

const run = promisify(execFile);
const SITE = { link: 'https://hub.example.org/i/small', hub: 'https://hub.example.org', token: 'join-7f3a9c' };

describe('hostme export --format iso', () => {
  let img: SmallImage;
  let result: ExportResult;
  let iso: string;

  before(async () => {
    img = await packSmallImage();
    result = await exportImage({ repo: img.repoDir, name: img.name, format: 'iso', to: join(img.dir, 'out'), cacheDir: guestDebCache(), site: SITE });
    iso = result.files[0]!.url;
  });
  after(async () => img?.cleanup());

  test('xorriso reports a BIOS and a UEFI El Torito boot entry (no emulation, isohybrid-suitable) and an EFI partition for disk copies', async () => {
    assert.equal(result.files[0]!.name, 'small-1.iso');
    const { stdout } = await run('xorriso', ['-indev', iso, '-report_el_torito', 'plain'], { maxBuffer: 1 << 20 });
    assert.match(stdout, /El Torito boot img :\s+1\s+BIOS\s+y\s+none/);
    assert.match(stdout, /El Torito img path :\s+1\s+\/isolinux\/isolinux\.bin/);
    assert.match(stdout, /El Torito boot img :\s+2\s+UEFI\s+y\s+none/);
    assert.match(stdout, /El Torito img path :\s+2\s+\/boot\/efiboot\.img/);
    const { stdout: area } = await run('xorriso', ['-indev', iso, '-report_system_area', 'plain'], { maxBuffer: 1 << 20 });
    assert.match(area, /MBR partition\s+:\s+2\s+0x00\s+0xef\s/, 'an EFI system partition in the MBR of a disk copy');
    assert.match(area, /GPT\s+:\s+N\s+Info/);
    const mbr = Buffer.alloc(512);
    const handle = await open(iso, 'r');
    await handle.read(mbr, 0, 512, 0);
    await handle.close();
    assert.equal(mbr.readUInt16LE(510), 0xaa55, 'isohybrid MBR');
    const { stdout: listing } = await run('xorriso', ['-indev', iso, '-find', '/hostme', '-exec', 'lsdl'], { maxBuffer: 1 << 20 });
    assert.match(listing, /hostme\/site\.json/);
    assert.match(listing, /hostme\/disk0\.img/);
  });

  test('-cdrom alone boots to HOSTME-READY, prints the reference (not the token) and the guest reads /run/hostme/site.json', { timeout: 400_000 }, async () => {
    const vm = await bootExportToReady('-cdrom', img.guest, {
      firmwareBoot: true,
      diskBus: 'ide',
      disks: [{ file: iso, format: 'raw', readOnly: true }], // read-only IDE = a CD-ROM drive
      cpus: 1,
      keepRunning: true,
    });
    try {
      assert.match(vm.console, /hostme site: link=https:\/\/hub\.example\.org\/i\/small/);
      assert.match(vm.console, /hostme site: hub=https:\/\/hub\.example\.org/);
      assert.doesNotMatch(vm.console.slice(0, vm.console.indexOf('HOSTME-READY')), /join-7f3a9c/, 'the token is not printed');
      const since = vm.consoleLength;
      vm.sendConsole('cat /run/hostme/site.json; echo SITE-END\n');
      const echoed = await vm.waitForConsole(/"token": "join-7f3a9c"[\s\S]*SITE-END/, { timeoutMs: 60_000, since });
      assert.ok(echoed);
      assert.match(vm.console.slice(since), /"digest": "[0-9a-f]{64}"/);
    } finally {
      await vm.shutdown();
    }
  });

  test('the same file as a disk boots (isohybrid)', { timeout: 400_000 }, async () => {
    const disk = join(img.dir, 'usb-stick.img');
    await copyFile(iso, disk);
    const vm = await bootExportToReady('hybrid disk', img.guest, {
      firmwareBoot: true,
      diskBus: 'ide',
      disks: [{ file: disk, format: 'raw' }],
      cpus: 1,
    });
    assert.match(vm.console, /hostme-iso: booting small@1 from \/dev\/sd/);
    await vm.exited;
  });

  test('UEFI (OVMF): -cdrom alone boots to HOSTME-READY and prints the reference', { timeout: 400_000 }, async () => {
    const vm = await bootExportToReady('UEFI -cdrom', img.guest, {
      firmwareBoot: true,
      diskBus: 'ide',
      disks: [{ file: iso, format: 'raw', readOnly: true }],
      cpus: 1,
      extraArgs: await ovmfArgs(),
    });
    assert.match(vm.console, /hostme-iso: booting small@1 from \/dev\/sr0/);
    assert.match(vm.console, /hostme site: link=https:\/\/hub\.example\.org\/i\/small/);
    assert.match(vm.console, /hostme site: hub=https:\/\/hub\.example\.org/);
    assert.match(vm.console, /BdsDxe: starting Boot\d+ "UEFI[^"]*"/, 'OVMF started a UEFI boot option');
    assert.match(vm.console, /Welcome to GRUB/, 'through the EFI El Torito entry (GRUB), not isolinux');
    await vm.exited;
  });

  test('UEFI (OVMF): the same file as a disk boots (GPT/MBR EFI partition)', { timeout: 400_000 }, async () => {
    const disk = join(img.dir, 'usb-stick-uefi.img');
    await copyFile(iso, disk);
    const vm = await bootExportToReady('UEFI hybrid disk', img.guest, {
      firmwareBoot: true,
      diskBus: 'ide',
      disks: [{ file: disk, format: 'raw' }],
      cpus: 1,
      extraArgs: await ovmfArgs(),
    });
    assert.match(vm.console, /Welcome to GRUB/);
    assert.match(vm.console, /hostme-iso: booting small@1 from \/dev\/sd/);
    await vm.exited;
  });

  test('root= decides where the root file system is; unknown forms and bad references are refused', async () => {
    assert.equal(await rootOffset('console=ttyS0 root=/dev/nvme0n1 ro', img.guest.disk), 0);
    assert.equal(await rootOffset('root=/dev/sda', img.guest.disk), 0);
    const partitioned = join(img.dir, 'mbr.img');
    const sector = Buffer.alloc(512);
    sector[446 + 16 + 4] = 0x83;
    sector.writeUInt32LE(2048, 446 + 16 + 8);
    sector.writeUInt16LE(0xaa55, 510);
    await mkdir(img.dir, { recursive: true });
    await writeFile(partitioned, sector);
    assert.equal(await rootOffset('root=/dev/nvme0n1p2', partitioned), 2048 * 512);
    assert.equal(await rootOffset('root=/dev/vda2', partitioned), 2048 * 512);
    await assert.rejects(rootOffset('root=/dev/sda1', partitioned), (err: unknown) => isHostmeError(err, 'export-iso-root-unknown'));
    await assert.rejects(rootOffset('root=UUID=1234', partitioned), (err: unknown) => isHostmeError(err, 'export-iso-root-unknown') && /root=UUID=1234/.test(err.message));
    assert.throws(() => checkSiteReference({ link: 'https://x/i/a b' }), (err: unknown) => isHostmeError(err, 'usage'));
    assert.throws(() => checkSiteReference({ link: 'file:///etc/passwd' }), (err: unknown) => isHostmeError(err, 'usage') && /http\(s\) URL/.test(err.message));
    assert.throws(() => checkSiteReference({ link: 'https://x/i/a', token: 'a\nb' }), (err: unknown) => isHostmeError(err, 'usage'));
    await assert.rejects(
      exportImage({ repo: img.repoDir, name: img.name, format: 'iso', to: join(img.dir, 'none') }),
      (err: unknown) => isHostmeError(err, 'usage') && /--site-link/.test(err.message),
    );
  });
});
