/**
 * A blob (the snapshot's RAM) whose bytes are fetched when first read.
 * Fetched chunks (verified by their hash, by the ObjectSource) go into a
 * sparse local file, `<file>.partial`; `<file>.present` lists the chunks that
 * are durable there. Crash rule (the same as blob-file.ts): a chunk is listed
 * only after its bytes were written and fdatasync'ed, and the list is
 * replaced atomically (rename), so a kill -9 at any point leaves a list that
 * names only whole, verified chunks. Once every chunk is present the partial
 * file becomes `<file>` with a verified stamp, as materializeBlob leaves it.
 */
import { open, readFile, rename, rm, mkdir, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { chunkLength, isHole, type ChunkIndex } from '../format/chunk-index.js';
import type { FetchPriority, ObjectSource } from '../store/object-store.js';
import { HostmeError, errorMessage } from '../errors.js';
import { stamp, stampMatches } from '../runner/blob-file.js';
import type { OneFileSource } from './fuse-server.js';

const FLUSH_DELAY_MS = 200;
const PRESENT_MAGIC = 'hostme-present-v1';

export interface LazyBlobOptions {
  index: ChunkIndex;
  /** Where chunks come from (verified objects), usually the run's FetchScheduler. */
  source: ObjectSource;
  /** The complete blob's path (cache/blobs/<index id>); the partial file and its list sit beside it. */
  file: string;
  label: string;
  /** A chunk that no source could deliver verified (the read that needed it fails with EIO). */
  onChunkFailed?: (chunk: number, err: unknown, priority: FetchPriority) => void;
}

export class LazyBlob implements OneFileSource {
  readonly size: number;
  /** Chunks in the order reads first asked for them (a working set, when recorded). */
  readonly touched: number[] = [];
  /** Chunks fetched (and written) by this run. */
  fetchedChunks = 0;
  private readonly touchedSet = new Set<number>();
  private readonly present: Uint8Array;
  private readonly durable: Uint8Array;
  private readonly inflight = new Map<number, Promise<void>>();
  private unsynced: number[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();
  private closed = false;
  private failure: { chunk: number; err: unknown } | undefined;

  private constructor(
    private readonly options: LazyBlobOptions,
    private readonly handle: FileHandle,
    private readonly complete: boolean,
    present: Uint8Array,
  ) {
    this.size = options.index.size;
    this.present = present;
    this.durable = Uint8Array.from(present);
  }

  /** Opens the complete file if a stamp vouches for it, else the partial file and its list of present chunks. */
  static async open(options: LazyBlobOptions): Promise<LazyBlob> {
    const count = options.index.ids.length;
    if (await stampMatches(options.file)) {
      const handle = await open(options.file, 'r');
      if ((await handle.stat()).size === options.index.size) return new LazyBlob(options, handle, true, new Uint8Array(count).fill(1));
      await handle.close();
    }
    const partial = `${options.file}.partial`;
    await mkdir(dirname(partial), { recursive: true });
    const handle = await open(partial, 'a+', 0o600).then(async (h) => {
      await h.close();
      return open(partial, 'r+');
    });
    const present = await readPresent(`${options.file}.present`, handle, options.index);
    if (!present) await handle.truncate(0); // an unknown partial file: start over, trusting none of it
    await handle.truncate(options.index.size);
    return new LazyBlob(options, handle, false, present ?? new Uint8Array(count));
  }

  get chunkCount(): number {
    return this.options.index.ids.length;
  }

  isPresent(chunk: number): boolean {
    return this.present[chunk] === 1 || isHole(this.options.index.ids[chunk]!);
  }

  /** The failure that made a read fail, if any (named in the run's error). */
  get failed(): { chunk: number; err: unknown } | undefined {
    return this.failure;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const { chunkSize } = this.options.index;
    const first = Math.floor(offset / chunkSize);
    const last = Math.floor((offset + length - 1) / chunkSize);
    const waits: Array<Promise<void>> = [];
    for (let c = first; c <= last; c++) {
      if (!this.touchedSet.has(c)) {
        this.touchedSet.add(c);
        this.touched.push(c);
      }
      if (!this.isPresent(c)) waits.push(this.ensure(c, 'demand'));
    }
    await Promise.all(waits);
    const out = Buffer.alloc(length);
    const { bytesRead } = await this.handle.read(out, 0, length, offset);
    if (bytesRead !== length) throw new HostmeError('lazyfs-read', `${this.options.label}: short read at ${offset} (${bytesRead} of ${length} bytes)`, {});
    // Hole chunks are zeros whatever the file holds there.
    for (let c = first; c <= last; c++) {
      if (!isHole(this.options.index.ids[c]!)) continue;
      const from = Math.max(offset, c * chunkSize) - offset;
      const to = Math.min(offset + length, (c + 1) * chunkSize) - offset;
      out.fill(0, from, to);
    }
    return out;
  }

  /** Fetches `chunks` (e.g. the working set before a resume), all at `priority`. */
  async prefetch(chunks: Iterable<number>, priority: FetchPriority = 'prefetch'): Promise<void> {
    const waits: Array<Promise<void>> = [];
    for (const c of chunks) if (c >= 0 && c < this.chunkCount && !this.isPresent(c)) waits.push(this.ensure(c, priority));
    await Promise.all(waits);
  }

  /**
   * Fetches every missing chunk in the background, `order` first (the working
   * set), then the rest by offset. Demand reads overtake it (scheduler
   * priorities). Resolves when done, closed, or at the first failure.
   */
  async fillInBackground(order: number[] = [], priority: FetchPriority = 'background'): Promise<void> {
    const seen = new Set<number>();
    const all = [...order, ...this.options.index.ids.keys()].filter((c) => c >= 0 && c < this.chunkCount && !seen.has(c) && (seen.add(c), true));
    await this.prefetch(all, priority).catch(() => undefined);
  }

  get isComplete(): boolean {
    return this.options.index.ids.every((_, c) => this.isPresent(c));
  }

  private ensure(chunk: number, priority: FetchPriority): Promise<void> {
    const id = this.options.index.ids[chunk]!;
    const existing = this.inflight.get(chunk);
    if (existing) {
      // The scheduler fetches an object once and promotes a queued one to the new priority.
      if (priority !== 'background') void this.options.source.get({ id, length: chunkLength(this.options.index, chunk) }, { priority }).catch(() => undefined);
      return existing;
    }
    const fetching = this.fetch(chunk, priority).finally(() => this.inflight.delete(chunk));
    this.inflight.set(chunk, fetching);
    return fetching;
  }

  private async fetch(chunk: number, priority: FetchPriority): Promise<void> {
    const { index, source, label } = this.options;
    const length = chunkLength(index, chunk);
    if (this.closed) throw new HostmeError('lazyfs-closed', `${label}: closed`, {});
    let data: Uint8Array;
    try {
      data = (await source.get({ id: index.ids[chunk]!, length }, { priority })).data;
      if (data.length !== length) throw new HostmeError('object-invalid', `chunk ${chunk} has ${data.length} bytes, ${length} expected`, {});
    } catch (err) {
      if (this.closed) throw err;
      this.failure ??= { chunk, err };
      this.options.onChunkFailed?.(chunk, err, priority);
      throw new HostmeError('snapshot-ram-corrupt', `${label}: chunk ${chunk} (${index.ids[chunk]}) could not be fetched verified: ${errorMessage(err)}`, { chunk, id: index.ids[chunk] }, { cause: err });
    }
    if (this.closed) return;
    await this.handle.write(data, 0, length, chunk * index.chunkSize);
    this.present[chunk] = 1;
    this.fetchedChunks++;
    this.unsynced.push(chunk);
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushTimer || this.complete) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      void this.flush();
    }, FLUSH_DELAY_MS);
  }

  /** Make written chunks durable, then list them (in that order). */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      if (this.complete || this.unsynced.length === 0) return;
      const batch = this.unsynced;
      this.unsynced = [];
      await this.handle.datasync();
      for (const c of batch) this.durable[c] = 1;
      await writePresent(`${this.options.file}.present`, this.handle, this.options.index, this.durable);
    }).catch(() => undefined); // best effort: an unlisted chunk is only fetched again
    return this.flushing;
  }

  /** Stops fetching, lists what is durable and, when every chunk is here, installs the complete file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.flushTimer);
    await Promise.allSettled([...this.inflight.values()]);
    await this.flush();
    const complete = !this.complete && this.isComplete;
    await this.handle.close();
    if (!complete) return;
    const { file } = this.options;
    await rename(`${file}.partial`, file);
    await rm(`${file}.present`, { force: true });
    await stamp(file);
  }
}

function presentHeader(ino: bigint, index: ChunkIndex): string {
  return `${PRESENT_MAGIC} ino=${ino} size=${index.size} chunk=${index.chunkSize} chunks=${index.ids.length}\n`;
}

/** The durable chunks recorded for this very partial file (same inode, same index shape), or null. */
async function readPresent(file: string, handle: FileHandle, index: ChunkIndex): Promise<Uint8Array | null> {
  const data = await readFile(file).catch(() => null);
  if (!data) return null;
  const header = presentHeader((await handle.stat({ bigint: true })).ino, index);
  const head = Buffer.from(header);
  if (data.length !== head.length + index.ids.length || !data.subarray(0, head.length).equals(head)) return null;
  const list = Uint8Array.from(data.subarray(head.length));
  return list.every((b) => b === 0 || b === 1) ? list : null;
}

async function writePresent(file: string, handle: FileHandle, index: ChunkIndex, durable: Uint8Array): Promise<void> {
  const header = Buffer.from(presentHeader((await handle.stat({ bigint: true })).ino, index));
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const out = await open(tmp, 'w', 0o600);
  try {
    await out.write(Buffer.concat([header, durable]));
    await out.datasync();
  } finally {
    await out.close();
  }
  await rename(tmp, file).catch(async (err: unknown) => {
    await rm(tmp, { force: true });
    throw err;
  });
}
