import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { packImage, type PackRequest } from './pack-image.js';
import { openRepository, type Repository } from '../repo/repository.js';
import { verifyImage } from '../repo/verify.js';
import { indexStats } from '../format/chunk-index.js';
import { fillDisk, hasCode, makeDiskBytes, mountTmpfs, newKey, patchFile, pseudoRandom, readBlob, removeDir, run, tempDir, writeDisk } from '../testing/fixtures.js';

const CHUNK = 64 * 1024;
const key = newKey();

describe('packImage', () => {
  let work: string;
  let repo: Repository;
  let diskPath: string;
  let diskBytes: Uint8Array;
  const pack = (extra: Partial<PackRequest> & { disk: string }) =>
    packImage({ repo, workDir: work, name: 'demo', key, chunkSize: CHUNK, ...extra });

  before(async () => {
    work = await tempDir('hostme-pack-');
    repo = openRepository(join(work, 'repo'));
    diskBytes = makeDiskBytes(4);
    diskPath = await writeDisk(join(work, 'disk.raw'), diskBytes);
  });
  after(() => removeDir(work));

  test('a raw disk packs, verifies and reads back byte for byte', async () => {
    const summary = await pack({ disk: diskPath, version: '1' });
    assert.equal(summary.inputFormat, 'raw');
    assert.equal(summary.virtualSize, diskBytes.length);
    assert.equal(summary.chunks, diskBytes.length / CHUNK);
    assert.ok(summary.holes > 0, 'zero regions become holes');
    assert.equal(summary.reusedChunks, 0);
    assert.equal(summary.newChunks + summary.holes, summary.chunks, 'every data chunk is distinct here');
    const report = await verifyImage(repo, 'demo', '1', { trusted: [key] });
    assert.equal(report.ok, true, JSON.stringify(report.bad));
    assert.equal(report.objectsChecked, summary.newChunks);
    const image = await repo.loadImage('demo', '1');
    assert.equal(image.manifest.boot.mode, 'firmware');
    const { data } = await readBlob(repo, image.manifest.disks[0]!);
    assert.ok(Buffer.from(data).equals(Buffer.from(diskBytes)), 'content round-trips');
  });

  test('re-packing with one 4 KiB region changed stores exactly one new chunk', async () => {
    const changed = join(work, 'disk-v2.raw');
    await writeDisk(changed, diskBytes);
    await patchFile(changed, 100 * 1024, pseudoRandom(4096, 99)); // inside the first (random) region, chunk 1
    const first = await repo.loadImage('demo', '1');
    const summary = await pack({ disk: changed, version: '2' });
    assert.equal(summary.newChunks, 1);
    const distinct = indexStats((await readBlob(repo, first.manifest.disks[0]!)).index).distinct;
    assert.equal(summary.reusedChunks, distinct - 1, 'all other chunks reused');
    const second = await repo.loadImage('demo', '2');
    const [a, b] = [await repo.readIndex(first.manifest.disks[0]!), await repo.readIndex(second.manifest.disks[0]!)];
    const differing = a.ids.map((id, i) => (id === b.ids[i] ? -1 : i)).filter((i) => i >= 0);
    assert.deepEqual(differing, [1]);
    assert.equal((await verifyImage(repo, 'demo', '2')).ok, true);
  });

  test('a qcow2 of the same content gives the same index id', async () => {
    const qcow2 = join(work, 'disk.qcow2');
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', diskPath, qcow2]);
    const summary = await pack({ disk: qcow2, version: 'q' });
    assert.equal(summary.inputFormat, 'qcow2');
    assert.equal(summary.newChunks, 0);
    const raw = await repo.loadImage('demo', '1');
    const q = await repo.loadImage('demo', 'q');
    assert.equal(q.manifest.disks[0]!.index, raw.manifest.disks[0]!.index);
    assert.equal(q.manifest.disks[0]!.size, raw.manifest.disks[0]!.size);
    const leftovers = (await readdir(work)).filter((f) => f.startsWith('.pack-'));
    assert.deepEqual(leftovers, [], 'the conversion scratch directory is removed');
  });

  test('non-image inputs are disk-unreadable', async () => {
    const dir = join(work, 'a-directory');
    await mkdir(dir, { recursive: true });
    const empty = join(work, 'empty.img');
    await writeFile(empty, '');
    const text = join(work, 'notes.txt');
    await writeFile(text, 'hello, this is not a disk\n'.repeat(40).slice(0, 1000));
    for (const disk of [join(work, 'no-such-file.img'), dir, empty, text]) {
      await assert.rejects(pack({ disk, version: 'bad' }), hasCode('disk-unreadable'), disk);
    }
    assert.equal((await repo.listing()).images.demo!.versions.some((v) => v.version === 'bad'), false);
  });

  test('bad names and chunk sizes are refused before any work', async () => {
    await assert.rejects(pack({ disk: diskPath, name: 'Bad Name' } as PackRequest), hasCode('name-invalid'));
    await assert.rejects(pack({ disk: diskPath, version: '../x' }), hasCode('name-invalid'));
    await assert.rejects(pack({ disk: diskPath, chunkSize: 1000 }), hasCode('chunk-size-invalid'));
  });

  test('the next version number follows the highest numeric one', async () => {
    const summary = await pack({ disk: diskPath });
    assert.equal(summary.version, '3');
  });

  test('kernel and initrd are packed as blobs and referenced by the manifest', async () => {
    const kernelBytes = pseudoRandom(150 * 1024 + 123, 7);
    const initrdBytes = new TextEncoder().encode('initrd '.repeat(10000));
    const kernel = await writeDisk(join(work, 'vmlinux'), kernelBytes);
    const initrd = await writeDisk(join(work, 'initrd.img'), initrdBytes);
    await pack({ disk: diskPath, version: 'direct', kernel, initrd, cmdline: 'console=ttyS0 quiet' });
    const image = await repo.loadImage('demo', 'direct');
    const boot = image.manifest.boot;
    assert.equal(boot.mode, 'direct');
    if (boot.mode !== 'direct') return;
    assert.equal(boot.cmdline, 'console=ttyS0 quiet');
    assert.equal(boot.kernel.size, kernelBytes.length);
    assert.equal(boot.initrd?.size, initrdBytes.length);
    assert.ok(Buffer.from((await readBlob(repo, boot.kernel)).data).equals(Buffer.from(kernelBytes)));
    assert.ok(Buffer.from((await readBlob(repo, boot.initrd!)).data).equals(Buffer.from(initrdBytes)));
    const report = await verifyImage(repo, 'demo', 'direct');
    assert.equal(report.ok, true);
    assert.ok(report.objectsChecked > (await verifyImage(repo, 'demo', '1')).objectsChecked, 'kernel and initrd objects are verified too');
  });

  test('packing into a nearly full disk fails with store-full and publishes nothing', async (t) => {
    const mnt = join(work, 'small');
    const unmount = await mountTmpfs(mnt, '3m');
    if (!unmount) {
      t.skip('mounting a tmpfs is not permitted here');
      return;
    }
    try {
      const smallRepo = openRepository(join(mnt, 'repo'));
      const smallDisk = await writeDisk(join(work, 'small.raw'), makeDiskBytes(1, 5));
      await packImage({ repo: smallRepo, workDir: work, disk: smallDisk, name: 'demo', version: '1', key, chunkSize: CHUNK });
      await fillDisk(mnt, 256 * 1024);
      const bigDisk = await writeDisk(join(work, 'big.raw'), makeDiskBytes(4, 6));
      await assert.rejects(
        packImage({ repo: smallRepo, workDir: work, disk: bigDisk, name: 'demo', version: '2', key, chunkSize: CHUNK }),
        hasCode('store-full'),
      );
      const listing = await smallRepo.listing();
      assert.deepEqual(listing.images.demo!.versions.map((v) => v.version), ['1']);
      assert.deepEqual(await readdir(join(mnt, 'repo', 'manifests', 'demo')), ['1.json'], 'no manifest for the failed version');
      const report = await verifyImage(smallRepo, 'demo', '1', { trusted: [key] });
      assert.equal(report.ok, true, JSON.stringify(report.bad));
    } finally {
      await unmount();
    }
  });
});
