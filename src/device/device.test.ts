import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlockDevice } from './block-device.js';
import { MemoryDevice } from './memory-device.js';
import { CowOverlay } from './cow-overlay.js';
import { ChunkedImageDevice } from './chunked-image.js';
import { encodeObject } from '../format/node/codecs.js';
import { HOLE_ID } from '../format/digest.js';
import type { ObjectSource, VerifiedObject } from '../store/object-store.js';
import { StoreError } from '../store/errors.js';
import { isHostmeError } from '../errors.js';
import { pseudoRandom, tempDir, removeDir } from '../testing/fixtures.js';
import { openFileOverlay } from './node/cow-file.js';
import { FileDevice } from '../nbd/file-device.js';

const SIZE = 1024 * 1024 + 512; // not a multiple of the 4 KiB overlay block

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
      assert.ok(Buffer.from(await device.read(offset, length)).equals(await model.read(offset, length)), `read ${offset}+${length} after ${i} ops`);
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
function chunkedImageOf(content: Uint8Array): ChunkedImageDevice {
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
  return new ChunkedImageDevice({ chunkSize, size: content.length, ids }, sourceOf(objects));
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
