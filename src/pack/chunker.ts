import { open } from 'node:fs/promises';
import { HOLE_ID, type ObjectId } from '../format/digest.js';
import { chunkCountFor, encodeIndex, indexByteLength, type ChunkIndex } from '../format/chunk-index.js';
import { encodeObject } from '../format/node/codecs.js';
import type { ObjectStore } from '../store/object-store.js';
import type { BlobRef } from '../format/manifest.js';
import { ChunkWorkerPool } from './worker-pool.js';
import { HostmeError } from '../errors.js';

export interface ChunkingStats {
  size: number;
  chunks: number;
  holes: number;
  newChunks: number;
  reusedChunks: number;
  /** Bytes written to the store (new objects only). */
  newStoredBytes: number;
  /** Stored bytes of all distinct objects this blob references. */
  storedBytes: number;
}

export interface ChunkedBlob {
  ref: BlobRef;
  index: ChunkIndex;
  stats: ChunkingStats;
}

export type ProgressListener = (doneBytes: number, totalBytes: number) => void;

/**
 * Split a raw file into fixed-size chunks, hash and compress them on worker
 * threads, store the objects the store does not have yet, then store the index.
 * Memory stays bounded: at most a few chunks per worker are in flight.
 */
export async function chunkFile(
  path: string,
  size: number,
  chunkSize: number,
  store: ObjectStore,
  pool: ChunkWorkerPool,
  onProgress: ProgressListener = () => {},
  level?: number,
): Promise<ChunkedBlob> {
  const count = chunkCountFor(size, chunkSize);
  const ids: ObjectId[] = new Array(count);
  const stats: ChunkingStats = { size, chunks: count, holes: 0, newChunks: 0, reusedChunks: 0, newStoredBytes: 0, storedBytes: 0 };
  const seen = new Map<ObjectId, Promise<void>>();
  const file = await open(path, 'r');
  const window = pool.size * 3;
  const inFlight = new Set<Promise<void>>();
  let done = 0;
  try {
    for (let seq = 0; seq < count; seq++) {
      const length = Math.min(chunkSize, size - seq * chunkSize);
      const data = new Uint8Array(length);
      const { bytesRead } = await file.read(data, 0, length, seq * chunkSize);
      if (bytesRead !== length) throw new HostmeError('pack-source-changed', `${path}: short read at chunk ${seq} (file changed while packing?)`, { path, chunk: seq });
      const task = pool.run({ seq, data, level }).then(async (result) => {
        if (result.hole) {
          ids[result.seq] = HOLE_ID;
          stats.holes++;
        } else {
          ids[result.seq] = result.id;
          await storeOnce(result.id, result.stored);
        }
        done += length;
        onProgress(done, size);
      });
      inFlight.add(task);
      task.finally(() => inFlight.delete(task)).catch(() => {});
      if (inFlight.size >= window) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
  } finally {
    await Promise.allSettled(inFlight);
    await file.close();
  }

  async function storeOnce(id: ObjectId, stored: Uint8Array): Promise<void> {
    const existing = seen.get(id);
    if (existing) return existing;
    const work = (async () => {
      if (await store.has(id)) {
        stats.reusedChunks++;
      } else {
        await store.put(id, stored);
        stats.newChunks++;
        stats.newStoredBytes += stored.length;
      }
      stats.storedBytes += stored.length;
    })();
    seen.set(id, work);
    return work;
  }

  const index: ChunkIndex = { chunkSize, size, ids };
  const indexRef = await storeIndex(index, store);
  return { ref: { size, chunkSize, index: indexRef }, index, stats };
}

export async function storeIndex(index: ChunkIndex, store: ObjectStore): Promise<ObjectId> {
  const encoded = encodeObject(encodeIndex(index));
  if (encoded.length !== indexByteLength(index.size, index.chunkSize)) throw new HostmeError('internal', 'index length mismatch', { size: index.size });
  if (!(await store.has(encoded.id))) await store.put(encoded.id, encoded.stored);
  return encoded.id;
}
