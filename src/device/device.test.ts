import { test } from 'node:test';
import assert from 'node:assert/strict';
import { truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlockDevice } from './block-device.js';
import { MemoryDevice } from './memory-device.js';
import { CowOverlay } from './cow-overlay.js';
import { ChunkedImageDevice, type ChunkedImageOptions } from './chunked-image.js';
import { VerifiedChunkFile } from './node/verified-chunks.js';
import { encodeObject } from '../format/node/codecs.js';
import { HOLE_ID } from '../format/digest.js';
import type { ObjectSource, VerifiedObject } from '../store/object-store.js';
import { StoreError } from '../store/errors.js';
import { isHostmeError } from '../errors.js';
import { pseudoRandom, tempDir, removeDir } from '../testing/fixtures.js';
import { openFileOverlay } from './node/cow-file.js';
import { FileDevice } from '../nbd/file-device.js';

const SIZE = 1024 * 1024 + 512; // not a multiple of the 4 KiB overlay block

/** readInto() into a buffer full of stale bytes (as a reused reply buffer is): every byte must be overwritten. */
async function readIntoGarbage(device: BlockDevice, offset: number, length: number): Promise<Uint8Array> {
  const into = new Uint8Array(length).fill(0xa5);
  await device.readInto!(into, offset);
  return into;
}

/** The same random I/O on a device and on a plain memory model must read back the same. */
async function exerciseAgainstModel(device: BlockDevice, model: MemoryDevice, seed: number): Promise<void> {
  let x = seed;
  const next = (n: number) => {
    x = (x * 1103515245 + 12345) >>> 0;
    return x % n;
  };
  for (let i = 0; i < 300; i++) {
    const offset = next(SIZE - 1);
    const length = 1 + next(Math.min(70_000, SIZE - offset));
    const op = next(4);
    if (op === 0) {
      const data = pseudoRandom(length, i + 1);
      await device.write!(offset, data);
      await model.write(offset, data);
    } else if (op === 1) {
      await device.writeZeroes!(offset, length);
      await model.writeZeroes(offset, length);
    } else {
      const expected = await model.read(offset, length);
      assert.ok(Buffer.from(await device.read(offset, length)).equals(expected), `read ${offset}+${length} after ${i} ops`);
      if (device.readInto) assert.ok(Buffer.from(await readIntoGarbage(device, offset, length)).equals(expected), `readInto ${offset}+${length} after ${i} ops`);
    }
  }
  assert.ok(Buffer.from(await device.read(0, SIZE)).equals(await model.read(0, SIZE)));
}

test('CowOverlay behaves like a plain disk for unaligned writes, zeroes and reads, and never touches its base', async () => {
  const dir = await tempDir('hostme-cow-');
  try {
    const baseBytes = pseudoRandom(SIZE, 7);
    const base = new MemoryDevice(baseBytes.slice(), { readOnly: true });
    const overlay = await openFileOverlay(base, dir);
    await exerciseAgainstModel(overlay, new MemoryDevice(baseBytes.slice()), 42);
    assert.deepEqual(await base.read(0, SIZE), baseBytes, 'the base changed');
    assert.ok(overlay.writtenBlocks > 0);
    await overlay.close();
  } finally {
    await removeDir(dir);
  }
});

test('in-memory CowOverlay (the browser\'s) behaves like a plain disk and never touches its base', async () => {
  const baseBytes = pseudoRandom(SIZE, 8);
  const base = new MemoryDevice(baseBytes.slice(), { readOnly: true });
  const overlay = new CowOverlay(base);
  await exerciseAgainstModel(overlay, new MemoryDevice(baseBytes.slice()), 43);
  assert.deepEqual(await base.read(0, SIZE), baseBytes, 'the base changed');
  assert.ok(overlay.writtenBlocks > 0);
  await overlay.close();
});

test('CowOverlay keeps flushed writes across reopen; unflushed ones may be lost, never half-mapped', async () => {
  const dir = await tempDir('hostme-cow-persist-');
  try {
    const base = new MemoryDevice(pseudoRandom(SIZE, 3), { readOnly: true });
    const first = await openFileOverlay(base, dir);
    await first.write(8192, new Uint8Array(4096).fill(0xaa));
    await first.flush();
    await first.write(65536, new Uint8Array(4096).fill(0xbb)); // never flushed: like a crash before the guest's flush
    // Simulate kill -9: reopen without close().
    const second = await openFileOverlay(base, dir);
    assert.deepEqual(await second.read(8192, 4096), new Uint8Array(4096).fill(0xaa));
    assert.deepEqual(await second.read(65536, 4096), await base.read(65536, 4096));
    await second.close();
    await first.close().catch(() => {});
  } finally {
    await removeDir(dir);
  }
});

test('a corrupt overlay map is a clear error that says how to recover', async () => {
  const dir = await tempDir('hostme-cow-corrupt-');
  try {
    await writeFile(join(dir, 'overlay.map'), 'garbage');
    await assert.rejects(openFileOverlay(new MemoryDevice(SIZE), dir), (err) => isHostmeError(err) && /hostme reset/.test(err.message));
  } finally {
    await removeDir(dir);
  }
});

function sourceOf(objects: Map<string, Uint8Array>, failing = new Set<string>()): ObjectSource & { gets: number } {
  const source = {
    name: 'test-source',
    gets: 0,
    async get(ref: { id: string; length: number }): Promise<VerifiedObject> {
      source.gets++;
      if (failing.has(ref.id)) throw new StoreError('store-unavailable', 'mirror down');
      const data = objects.get(ref.id)!;
      return { id: ref.id, data, stored: encodeObject(data).stored, source: 'test' };
    },
    has: async (id: string) => objects.has(id),
    close: async () => {},
  };
  return source;
}

test('ChunkedImageDevice reads across chunks, holes read as zeros without a fetch, a failed fetch is EIO', async () => {
  const chunkSize = 64 * 1024;
  const size = 3 * chunkSize + 1000;
  const bytes = pseudoRandom(size, 11);
  bytes.fill(0, chunkSize, 2 * chunkSize); // chunk 1 is a hole
  const objects = new Map<string, Uint8Array>();
  const ids = [0, 1, 2, 3].map((i) => {
    const chunk = bytes.slice(i * chunkSize, Math.min(size, (i + 1) * chunkSize));
    if (i === 1) return HOLE_ID;
    const { id } = encodeObject(chunk);
    objects.set(id, chunk);
    return id;
  });
  const source = sourceOf(objects);
  const device = new ChunkedImageDevice({ chunkSize, size, ids }, source);
  assert.deepEqual(await device.read(0, size), bytes);
  assert.deepEqual(await device.read(chunkSize - 10, 20), bytes.slice(chunkSize - 10, chunkSize + 10));
  const before = source.gets;
  assert.deepEqual(await device.read(chunkSize + 5, 100), new Uint8Array(100));
  assert.equal(source.gets, before, 'a hole was fetched');

  const broken = new ChunkedImageDevice({ chunkSize, size, ids }, sourceOf(objects, new Set([ids[2]!])));
  await assert.rejects(broken.read(2 * chunkSize, 10), (err) => isHostmeError(err) && (err as { errno?: string }).errno === 'EIO' && /chunk 2/.test(err.message));
  await assert.rejects(device.read(size - 5, 10), (err) => isHostmeError(err, 'block-einval'));
});

/**
 * The contract every BlockDevice layer honours, run against each one: reads
 * return what the layer holds, a zero-length read is empty, a range past the
 * end is block-einval; writable layers behave like a plain disk under random
 * unaligned writes, zeroes and reads.
 */
function runBlockDeviceCases(name: string, make: (content: Uint8Array) => Promise<{ device: BlockDevice; cleanup?: () => Promise<void> }>): void {
  test(`BlockDevice contract: ${name}`, async () => {
    const content = pseudoRandom(SIZE, name.length + 3);
    const { device, cleanup } = await make(content.slice());
    try {
      assert.equal(device.size, SIZE);
      assert.ok(device.blockSize > 0 && (device.blockSize & (device.blockSize - 1)) === 0, 'block size is a power of two');
      // Compared as bytes: a layer may hand out a Buffer (a Uint8Array) from Node's file API.
      assert.ok(Buffer.from(await device.read(0, SIZE)).equals(content));
      assert.ok(Buffer.from(await device.read(SIZE - 7, 7)).equals(content.slice(SIZE - 7)));
      assert.equal((await device.read(123, 0)).length, 0);
      if (device.readInto) {
        assert.ok(Buffer.from(await readIntoGarbage(device, 0, SIZE)).equals(content), 'readInto of the whole device');
        assert.ok(Buffer.from(await readIntoGarbage(device, 70_000, 200_000)).equals(content.subarray(70_000, 270_000)), 'readInto across chunks');
        await assert.rejects(device.readInto(new Uint8Array(10), SIZE - 5), (err) => isHostmeError(err, 'block-einval'), 'readInto past the end');
      }
      for (const [offset, length] of [[SIZE - 5, 10], [-1, 4], [0, SIZE + 1], [1.5, 2]] as const) {
        await assert.rejects(device.read(offset, length), (err) => isHostmeError(err, 'block-einval'), `read(${offset}, ${length})`);
      }
      if (device.readOnly) {
        assert.equal(device.write, undefined, 'a read-only layer offers no write');
      } else {
        await exerciseAgainstModel(device, new MemoryDevice(content.slice()), name.length);
        await assert.rejects(device.write!(SIZE - 1, new Uint8Array(2)), (err) => isHostmeError(err, 'block-einval'));
      }
    } finally {
      await device.close();
      await cleanup?.();
    }
  });
}

/** A chunked image over `content`: 64 KiB chunks, all-zero ones as holes, from an in-memory source. */
function chunkedImageOf(content: Uint8Array, options: ChunkedImageOptions = {}): ChunkedImageDevice {
  const chunkSize = 64 * 1024;
  const objects = new Map<string, Uint8Array>();
  const ids: string[] = [];
  for (let at = 0; at < content.length; at += chunkSize) {
    const chunk = content.slice(at, at + chunkSize);
    if (chunk.every((b) => b === 0)) {
      ids.push(HOLE_ID);
      continue;
    }
    const { id } = encodeObject(chunk);
    objects.set(id, chunk);
    ids.push(id);
  }
  return new ChunkedImageDevice({ chunkSize, size: content.length, ids }, sourceOf(objects), options);
}

runBlockDeviceCases('MemoryDevice', async (content) => ({ device: new MemoryDevice(content) }));
runBlockDeviceCases('FileDevice', async (content) => {
  const dir = await tempDir('hostme-filedev-');
  await writeFile(join(dir, 'disk.raw'), content);
  return { device: await FileDevice.open(join(dir, 'disk.raw')), cleanup: () => removeDir(dir) };
});
runBlockDeviceCases('ChunkedImageDevice', async (content) => ({ device: chunkedImageOf(content) }));
runBlockDeviceCases('CowOverlay (file) over a ChunkedImageDevice', async (content) => {
  const dir = await tempDir('hostme-cowdev-');
  return { device: await openFileOverlay(chunkedImageOf(content), dir), cleanup: () => removeDir(dir) };
});
runBlockDeviceCases('CowOverlay (memory) over a ChunkedImageDevice', async (content) => ({ device: new CowOverlay(chunkedImageOf(content)) }));

/** Chunk 2 (64 KiB chunks) all zeros, so the image has a hole between verified chunks. */
function withHole(content: Uint8Array): Uint8Array {
  content.fill(0, 2 * 65536, 3 * 65536);
  return content;
}

runBlockDeviceCases('ChunkedImageDevice reading a verify-once file (some chunks verified earlier)', async (content) => {
  const dir = await tempDir('hostme-verified-dev-');
  const image = chunkedImageOf(content);
  const verified = await VerifiedChunkFile.open(join(dir, 'v'), image.index);
  for (const chunk of [0, 1, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]) await verified.record(chunk, await image.chunk(chunk, 'background'));
  await verified.close();
  // Chunk 5 was never verified: it comes from the source, the others from the file.
  return { device: chunkedImageOf(content, { verified: await VerifiedChunkFile.open(join(dir, 'v'), image.index) }), cleanup: () => removeDir(dir) };
});

test('verified chunks are read in runs straight from the verify-once file, without a fetch; a file that lies short falls back to the source', async () => {
  const dir = await tempDir('hostme-verified-runs-');
  try {
    const content = withHole(pseudoRandom(SIZE, 21));
    const warm = chunkedImageOf(content);
    const file = await VerifiedChunkFile.open(join(dir, 'v'), warm.index);
    for (let chunk = 0; chunk < warm.index.ids.length; chunk++) {
      if (chunk !== 2) await file.record(chunk, await warm.chunk(chunk, 'background'));
    }
    await file.close();
    const objects = new Map<string, Uint8Array>();
    for (let chunk = 0; chunk < warm.index.ids.length; chunk++) {
      if (chunk !== 2) objects.set(warm.index.ids[chunk]!, content.slice(chunk * 65536, (chunk + 1) * 65536));
    }
    const source = sourceOf(objects);
    const firstAccess: number[] = [];
    const image = new ChunkedImageDevice(warm.index, source, { verified: await VerifiedChunkFile.open(join(dir, 'v'), warm.index), onFirstAccess: (c) => firstAccess.push(c) });
    assert.ok(Buffer.from(await readIntoGarbage(image, 1000, SIZE - 2000)).equals(content.subarray(1000, SIZE - 1000)));
    assert.equal(source.gets, 0, 'a verified chunk was fetched again');
    const touched = Math.floor((SIZE - 1001) / 65536) + 1; // chunks 0 .. the one holding byte SIZE - 1001
    assert.deepEqual(firstAccess.sort((a, b) => a - b), Array.from({ length: touched }, (_, i) => i), 'every chunk read is reported once (boot profile)');
    await image.close();
    // The data file shrinks underneath (disk trouble): the claimed chunks past its end come from the source, still right.
    await truncate(join(dir, 'v', 'data'), 5 * 65536);
    const shortFile = new ChunkedImageDevice(warm.index, source, { verified: await VerifiedChunkFile.open(join(dir, 'v'), warm.index) });
    assert.ok(Buffer.from(await readIntoGarbage(shortFile, 0, SIZE)).equals(content));
    assert.ok(source.gets > 0, 'the short file was trusted');
    await shortFile.close();
  } finally {
    await removeDir(dir);
  }
});
