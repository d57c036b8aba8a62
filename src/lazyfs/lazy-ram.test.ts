import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isHole, type ChunkIndex } from '../format/chunk-index.js';
import { sha256Hex } from '../format/node/codecs.js';
import type { Repository } from '../repo/repository.js';
import type { ObjectSource } from '../store/object-store.js';
import { CountingSource } from '../testing/counting-source.js';
import { makeDiskBytes, packWithNewKey, removeDir, tempDir, writeDisk } from '../testing/fixtures.js';
import { openLazyRam } from './lazy-ram.js';
import { mountOneFile } from './fuse-server.js';

// The lazy RAM file on a real FUSE mount (root, /dev/fuse). With CI=true a missing FUSE fails.
const canMount = process.getuid?.() === 0;
const skip = !canMount && process.env.CI !== 'true' ? 'needs root for a FUSE mount' : false;

let work: string;
let repo: Repository;
let index: ChunkIndex;
let blob: Uint8Array;

before(async () => {
  work = await tempDir('hostme-lazyram-');
  // 4 MiB with zero regions (holes) between data regions, 64 KiB chunks.
  blob = makeDiskBytes(4, 11);
  const file = await writeDisk(join(work, 'ram.raw'), blob);
  ({ repo } = await packWithNewKey(work, join(work, 'repo'), { disk: file, name: 'ram', version: '1', chunkSize: 65536 }));
  const ref = (await repo.loadImage('ram', '1')).manifest.disks[0]!;
  index = await repo.readIndex(ref, repo.objects, 'ram');
  assert.ok(index.ids.some(isHole) && index.ids.some((id) => !isHole(id)), 'the blob has holes and data');
});

after(() => removeDir(work));

test('the FUSE file holds the blob byte for byte (holes as zeros), read sequentially and at random', { skip }, async () => {
  const source = new CountingSource(repo.objects, 0);
  const ram = await openLazyRam({ index, source, file: join(work, 'cache', 'ram-a'), label: 'test RAM', drainMs: 0 });
  try {
    const handle = await open(ram.path, 'r');
    try {
      // Random first (each read may fetch), then the whole file in sequence.
      let seed = 7;
      for (let i = 0; i < 200; i++) {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        const offset = seed % blob.length;
        const length = Math.min(1 + (seed % 200_000), blob.length - offset);
        const out = Buffer.alloc(length);
        const { bytesRead } = await handle.read(out, 0, length, offset);
        assert.equal(bytesRead, length);
        assert.ok(out.equals(blob.subarray(offset, offset + length)), `bytes at ${offset}+${length}`);
      }
    } finally {
      await handle.close();
    }
    assert.ok(Buffer.from(await readFile(ram.path)).equals(blob), 'sequential read of every byte');
    // (A read that finds its chunk in flight asks again at demand priority: the scheduler shares that fetch.)
    assert.equal(source.ids.size, new Set(index.ids.filter((id) => !isHole(id))).size, 'every data chunk fetched, holes never');
  } finally {
    await ram.close();
  }
  // Every chunk was fetched: the complete file is installed with a stamp, and a second mount reads none.
  assert.ok(Buffer.from(await readFile(join(work, 'cache', 'ram-a'))).equals(blob));
  const again = new CountingSource(repo.objects, 0);
  const second = await openLazyRam({ index, source: again, file: join(work, 'cache', 'ram-a'), label: 'test RAM', drainMs: 0 });
  try {
    assert.ok(Buffer.from(await readFile(second.path)).equals(blob));
    assert.equal(again.reads, 0);
  } finally {
    await second.close();
  }
});

test('a run stopped half way lists only durable, verified chunks; the next run trusts those and fetches the rest', { skip }, async () => {
  const file = join(work, 'cache', 'ram-b');
  const source = new CountingSource(repo.objects, 30);
  const ram = await openLazyRam({ index, source, file, label: 'test RAM', drainMs: 0 });
  const half = index.ids.map((_, i) => i).filter((i) => !isHole(index.ids[i]!)).slice(0, 10);
  await ram.blob.prefetch(half);
  await ram.blob.flush();
  // Corrupt a chunk that is not listed: the next run must not trust it.
  const unlisted = index.ids.findIndex((id, i) => !isHole(id) && !half.includes(i));
  const partial = await open(`${file}.partial`, 'r+');
  await partial.write(Buffer.alloc(100, 0x5a), 0, 100, unlisted * index.chunkSize);
  await partial.close();
  await ram.mount.unmount();
  await ram.blob.close();
  const list = await readFile(`${file}.present`);
  const flags = list.subarray(list.indexOf(10) + 1);
  const bytes = await readFile(`${file}.partial`);
  flags.forEach((flag, i) => {
    if (flag === 1) assert.equal(sha256Hex(bytes.subarray(i * index.chunkSize, (i + 1) * index.chunkSize)), index.ids[i], `listed chunk ${i} verifies`);
  });
  assert.equal(flags[unlisted], 0);

  const next = new CountingSource(repo.objects, 0);
  const second = await openLazyRam({ index, source: next, file, label: 'test RAM', drainMs: 0 });
  try {
    assert.ok(Buffer.from(await readFile(second.path)).equals(blob), 'every byte, the corrupted unlisted chunk fetched again');
    for (const i of half) assert.ok(!next.ids.has(index.ids[i]!) || index.ids.indexOf(index.ids[i]!) !== i, `listed chunk ${i} not fetched again`);
    assert.ok(next.ids.has(index.ids[unlisted]!), 'the unlisted chunk was fetched again');
  } finally {
    await second.close();
  }
});

test('a read that no source can satisfy verified fails with EIO and names the chunk', { skip }, async () => {
  const failing: ObjectSource = { name: 'bad', get: () => Promise.reject(new Error('object-invalid: hash mismatch')), has: () => Promise.resolve(false), close: () => Promise.resolve() };
  const failed: number[] = [];
  const ram = await openLazyRam({ index, source: failing, file: join(work, 'cache', 'ram-c'), label: 'test RAM', drainMs: 0 });
  ram.onChunkFailed = (chunk) => failed.push(chunk);
  try {
    const chunk = index.ids.findIndex((id) => !isHole(id));
    await assert.rejects(readFile(ram.path), /EIO/);
    assert.deepEqual(failed.slice(0, 1), [chunk]);
    assert.equal(ram.blob.failed?.chunk, chunk);
  } finally {
    await ram.close();
  }
});

test('the one-file mount answers LOOKUP, GETATTR, STATFS and refuses what it does not serve', { skip }, async () => {
  const data = Buffer.from('hello lazy file\n');
  const mount = await mountOneFile({ size: data.length, read: (o, l) => Promise.resolve(data.subarray(o, o + l)) }, { mountpoint: join(work, 'mnt-d'), fileName: 'ram' });
  try {
    const { stat, statfs, writeFile } = await import('node:fs/promises');
    assert.equal((await stat(mount.path)).size, data.length);
    assert.ok((await statfs(mount.mountpoint)).blocks >= 1);
    await assert.rejects(stat(join(mount.mountpoint, 'other')), /ENOENT/);
    await assert.rejects(writeFile(mount.path, 'x'), /EROFS|ENOSYS|EACCES|EPERM/);
    assert.equal(await readFile(mount.path, 'utf8'), data.toString());
  } finally {
    await mount.unmount();
  }
});
