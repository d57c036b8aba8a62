import { parentPort } from 'node:worker_threads';
import { encodeObject } from '../format/node/codecs.js';
import { isAllZero } from '../format/digest.js';

/** Worker: hash and compress one chunk; all-zero chunks come back as holes. */
export interface ChunkJob {
  seq: number;
  data: Uint8Array;
  /** zstd level; boot blobs use a high one (fetched whole, once, on the critical path). */
  level?: number;
}
export type ChunkResult = { seq: number; hole: true } | { seq: number; hole: false; id: string; length: number; stored: Uint8Array };

parentPort?.on('message', (job: ChunkJob) => {
  if (isAllZero(job.data)) {
    parentPort!.postMessage({ seq: job.seq, hole: true } satisfies ChunkResult);
    return;
  }
  const encoded = encodeObject(job.data, job.level);
  // Copy into a fresh buffer we can transfer (zstd-napi may return pooled memory).
  const stored = encoded.stored === job.data ? job.data : new Uint8Array(encoded.stored);
  parentPort!.postMessage({ seq: job.seq, hole: false, id: encoded.id, length: encoded.length, stored } satisfies ChunkResult, [stored.buffer as ArrayBuffer]);
});
