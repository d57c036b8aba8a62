import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, readdir, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import tar from 'tar-stream';
import { isHostmeError } from '../errors.js';
import type { VmDisk } from '../vm/qemu.js';
import { exportImage, type ExportResult } from './export-image.js';
import { EXPORT_FORMATS, exportFormat } from './formats/index.js';
import { vhd } from './formats/vhd.js';
import { sha256File } from './hash.js';
import { bootExportToReady, packSmallImage, type SmallImage } from './test-fixture.js';
import { imageInfo, qemuImg } from './tools.js';

const DISK = 64 * 1024 * 1024;

async function untar(file: string, gzip = false): Promise<Array<{ name: string; data: Buffer }>> {
  const extract = tar.extract();
  const members: Array<{ name: string; data: Buffer }> = [];
  let input: NodeJS.ReadableStream = createReadStream(file);
  if (gzip) input = input.pipe((await import('node:zlib')).createGunzip());
  input.pipe(extract);
  for await (const entry of extract) {
    const parts: Buffer[] = [];
    for await (const chunk of entry) parts.push(chunk as Buffer);
    members.push({ name: entry.header.name, data: Buffer.concat(parts) });
  }
  return members;
}

/** VHD footer (last 512 bytes): cookie "conectix", disk type 2 = fixed, current size = the data before it. */
async function assertFixedVhd(file: string, size: number): Promise<void> {
  const data = await readFile(file);
  assert.equal(data.length, size + 512);
  const footer = data.subarray(size);
  assert.equal(footer.subarray(0, 8).toString(), 'conectix');
  assert.equal(footer.readUInt32BE(60), 2, 'disk type fixed');
  assert.equal(Number(footer.readBigUInt64BE(48)), size, 'current size');
}

describe('hostme export formats', () => {
  let img: SmallImage;
  const exported = new Map<string, ExportResult>();
  let outDir: string;
  const run = async (format: string, extra: { compress?: boolean; provider?: 'libvirt' | 'virtualbox' } = {}) => {
    const key = `${format}${extra.compress ? '-c' : ''}${extra.provider ? `-${extra.provider}` : ''}`;
    const cached = exported.get(key);
    if (cached) return cached;
    // These tests check that each format carries the published disk's bytes: no bootloader (bootloader.test.ts boots them without -kernel).
    const result = await exportImage({ repo: img.repoDir, name: img.name, format, to: join(outDir, key), bootloader: false, ...extra });
    exported.set(key, result);
    return result;
  };

  before(async () => {
    img = await packSmallImage();
    outDir = join(img.dir, 'out');
    await mkdir(outDir);
  });
  after(async () => {
    await img?.cleanup();
  });

  test('every registered format has a distinct name and a writer', () => {
    const names = EXPORT_FORMATS.map((f) => f.name);
    assert.deepEqual(names, ['raw', 'qcow2', 'vmdk', 'vdi', 'vhd', 'vhdx', 'ova', 'vagrant', 'iso']);
    assert.equal(new Set(names).size, names.length);
  });

  test('unknown format: clear error listing the valid ones', async () => {
    assert.throws(() => exportFormat('floppy'), (err: unknown) => isHostmeError(err, 'export-format-unknown') && /raw, qcow2, vmdk, vdi, vhd, vhdx, ova, vagrant, iso/.test(err.message));
    await assert.rejects(exportImage({ repo: img.repoDir, name: img.name, format: 'floppy', to: join(outDir, 'x') }), (err: unknown) => isHostmeError(err, 'export-format-unknown'));
  });

  test('unknown destination: clear error listing the valid ones', async () => {
    await assert.rejects(
      exportImage({ repo: img.repoDir, name: img.name, format: 'raw', to: 'ftp://example.org/x' }),
      (err: unknown) => isHostmeError(err, 'export-destination-unknown') && /s3 .*http .*local/.test(err.message),
    );
  });

  test('raw: byte-identical to the source disk, sparse, nothing else left in the destination', async () => {
    const result = await run('raw');
    assert.equal(result.files.length, 1);
    const file = result.files[0]!;
    assert.equal(file.name, 'small-1.raw');
    assert.equal(file.size, DISK);
    assert.equal(file.sha256, await sha256File(img.guest.disk));
    assert.equal(await sha256File(file.url), file.sha256);
    const st = await stat(file.url);
    assert.ok(st.blocks * 512 < DISK / 2, `raw export should be sparse (${st.blocks * 512} bytes allocated)`);
    assert.deepEqual(await readdir(join(outDir, 'raw')), ['small-1.raw']);
  });

  const diskFormats: Array<{ format: string; qemu: string; check: boolean; compress?: boolean; size?: number }> = [
    { format: 'qcow2', qemu: 'qcow2', check: true },
    { format: 'qcow2', qemu: 'qcow2', check: true, compress: true },
    { format: 'vmdk', qemu: 'vmdk', check: true },
    { format: 'vdi', qemu: 'vdi', check: true },
    { format: 'vhd', qemu: 'vpc', check: false },
    { format: 'vhdx', qemu: 'vhdx', check: true },
  ];
  for (const { format, qemu, check, compress } of diskFormats) {
    test(`${format}${compress ? ' (compressed)' : ''}: qemu-img sees ${qemu}, ${DISK} bytes${check ? ', check clean' : ''}, same content`, async () => {
      const result = await run(format, { compress });
      const file = result.files[0]!;
      assert.match(file.name, new RegExp(`^small-1\\.${format}$`));
      // A fixed VHD has no header, only a footer: qemu-img cannot probe it, so name the format (and check the footer).
      const info = await imageInfo(file.url, qemu === 'vpc' ? 'vpc' : undefined);
      assert.equal(info.format, qemu);
      if (qemu === 'vpc') await assertFixedVhd(file.url, DISK);
      assert.equal(info['virtual-size'], DISK);
      if (check) await qemuImg(['check', '-f', qemu, file.url]);
      if (format === 'vmdk') assert.match(JSON.stringify(info['format-specific']), /monolithicSparse/);
      // Content equality with the source disk.
      await qemuImg(['compare', '-f', qemu, '-F', 'raw', file.url, img.guest.disk]);
    });
  }

  test('vhd: virtual size rounded up to a whole MiB (fixed, force_size)', async () => {
    const dir = join(outDir, 'vhd-odd');
    await mkdir(dir);
    const raw = join(dir, 'odd.raw');
    await writeFile(raw, 'hello');
    await truncate(raw, 3 * 1024 * 1024 + 4096);
    const [file] = await vhd.write(raw, { hardware: { arch: 'x86_64', memoryMiB: 64, cpus: 1 } } as never, dir, { baseName: 'odd' });
    const info = await imageInfo(file!.path, 'vpc');
    assert.equal(info['virtual-size'], 4 * 1024 * 1024);
    await assertFixedVhd(file!.path, 4 * 1024 * 1024);
  });

  test('ova: ustar with .ovf first, .vmdk (streamOptimized), .mf whose SHA256 lines verify; OVF items from the manifest', async () => {
    const result = await run('ova');
    const file = result.files[0]!;
    assert.equal(file.name, 'small-1.ova');
    const raw = await readFile(file.url);
    assert.equal(raw.subarray(257, 262).toString(), 'ustar', 'first header is ustar');
    const members = await untar(file.url);
    assert.deepEqual(members.map((m) => m.name), ['small-1.ovf', 'small-1-disk1.vmdk', 'small-1.mf']);
    const [ovf, vmdk, mf] = members as [(typeof members)[0], (typeof members)[0], (typeof members)[0]];
    const lines = mf.data.toString().trim().split('\n');
    assert.equal(lines.length, 2);
    for (const member of [ovf, vmdk]) {
      const hash = (await import('node:crypto')).createHash('sha256').update(member.data).digest('hex');
      assert.ok(lines.includes(`SHA256(${member.name})= ${hash}`), `mf has the right hash of ${member.name}`);
    }
    const xml = ovf.data.toString();
    assert.match(xml, /^<\?xml version="1.0" encoding="UTF-8"\?>\n<Envelope ovf:version="1.0"/);
    assert.match(xml, new RegExp(`<File ovf:id="file1" ovf:href="small-1-disk1.vmdk" ovf:size="${vmdk.data.length}"/>`));
    assert.match(xml, new RegExp(`<Disk ovf:capacity="${DISK}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"`));
    assert.match(xml, /<NetworkSection>[\s\S]*<Network ovf:name="NAT">/);
    assert.match(xml, /<OperatingSystemSection ovf:id="101">/);
    assert.match(xml, /&lt;test &amp; &quot;quotes&quot;&gt;/, 'description is XML-escaped');
    const items = [...xml.matchAll(/<Item>([\s\S]*?)<\/Item>/g)].map((m) => m[1]!);
    const field = (item: string, name: string) => new RegExp(`<rasd:${name}>([^<]*)</rasd:${name}>`).exec(item)?.[1];
    const byType = new Map(items.map((item) => [field(item, 'ResourceType'), item]));
    assert.deepEqual([...byType.keys()], ['3', '4', '20', '17', '10']);
    assert.equal(field(byType.get('3')!, 'VirtualQuantity'), String(img.guest.cpus));
    assert.equal(field(byType.get('4')!, 'VirtualQuantity'), String(img.guest.memoryMiB));
    assert.equal(field(byType.get('4')!, 'AllocationUnits'), 'byte * 2^20');
    assert.equal(field(byType.get('17')!, 'Parent'), field(byType.get('20')!, 'InstanceID'));
    assert.equal(field(byType.get('17')!, 'HostResource'), '/disk/vmdisk1');
    assert.equal(field(byType.get('10')!, 'Connection'), 'NAT');
    // The embedded disk is a valid streamOptimized VMDK with the same content.
    const vmdkPath = join(outDir, 'ova-disk.vmdk');
    await writeFile(vmdkPath, vmdk.data);
    const info = await imageInfo(vmdkPath, 'vmdk');
    assert.equal(info['virtual-size'], DISK);
    assert.match(JSON.stringify(info['format-specific']), /streamOptimized/);
    await qemuImg(['compare', '-f', 'vmdk', '-F', 'raw', vmdkPath, img.guest.disk]);
  });

  test('vagrant (libvirt, default): gzip tar with metadata.json, Vagrantfile, qcow2 box.img', async () => {
    const result = await run('vagrant');
    const file = result.files[0]!;
    assert.equal(file.name, 'small-1.libvirt.box');
    const members = await untar(file.url, true);
    assert.deepEqual(members.map((m) => m.name).sort(), ['Vagrantfile', 'box.img', 'metadata.json']);
    const metadata = JSON.parse(members.find((m) => m.name === 'metadata.json')!.data.toString());
    assert.deepEqual(metadata, { provider: 'libvirt', format: 'qcow2', virtual_size: 1 });
    const vagrantfile = members.find((m) => m.name === 'Vagrantfile')!.data.toString();
    assert.match(vagrantfile, /Vagrant\.configure\("2"\)/);
    assert.match(vagrantfile, new RegExp(`memory = ${img.guest.memoryMiB}`));
    const boxImg = join(outDir, 'box.img');
    await writeFile(boxImg, members.find((m) => m.name === 'box.img')!.data);
    assert.equal((await imageInfo(boxImg)).format, 'qcow2');
  });

  test('vagrant --provider virtualbox: metadata {"provider":"virtualbox"}, box.ovf, vmdk, base_mac matching the OVF NIC', async () => {
    const result = await run('vagrant', { provider: 'virtualbox' });
    const members = await untar(result.files[0]!.url, true);
    assert.deepEqual(members.map((m) => m.name), ['metadata.json', 'Vagrantfile', 'box.ovf', 'box-disk001.vmdk', 'box.mf']);
    assert.deepEqual(JSON.parse(members[0]!.data.toString()), { provider: 'virtualbox' });
    const mac = /base_mac = "([0-9A-F]{12})"/.exec(members[1]!.data.toString())?.[1];
    assert.ok(mac);
    assert.match(members[2]!.data.toString(), new RegExp(`<rasd:Address>${mac}</rasd:Address>`));
  });

  test('--provider and --compress are refused where they do not apply', async () => {
    await assert.rejects(exportImage({ repo: img.repoDir, name: img.name, format: 'raw', to: join(outDir, 'y'), provider: 'libvirt' }), (err: unknown) => isHostmeError(err, 'usage'));
    await assert.rejects(exportImage({ repo: img.repoDir, name: img.name, format: 'vdi', to: join(outDir, 'y'), compress: true }), (err: unknown) => isHostmeError(err, 'usage'));
  });

  // The only test that boots: one TCG boot per format, direct kernel boot with the exported disk as root.
  test('qcow2, vmdk, vdi and vhdx exports boot the guest to HOSTME-READY (4 QEMU boots)', { timeout: 600_000 }, async () => {
    const cases: Array<{ format: string; qemu: VmDisk['format'] }> = [
      { format: 'qcow2', qemu: 'qcow2' },
      { format: 'vmdk', qemu: 'vmdk' },
      { format: 'vdi', qemu: 'vdi' },
      { format: 'vhdx', qemu: 'vhdx' },
    ];
    for (const { format, qemu } of cases) {
      const file = (await run(format)).files[0]!.url;
      const vm = await bootExportToReady(format, img.guest, {
        kernel: img.guest.kernel,
        cmdline: img.guest.cmdline,
        disks: [{ file, format: qemu }],
        timeoutMs: 150_000,
      });
      await vm.exited;
    }
  });
});
