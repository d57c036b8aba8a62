// A v86 disk backed by an ImageReader: v86 accepts any object with
// byteLength, load(), get(start, len, cb), set(start, data, cb),
// get_and_cache, get_from_cache, get_buffer(cb), get_state() and set_state()
// as `hda` (see buffer.js in v86: the loadable branch of V86's constructor).
// Reads fetch the covering chunks on demand; writes go to a copy-on-write
// overlay in RAM (256-byte blocks, v86's own granularity), never to the image.
import type { BlobRef } from './format.js';

/** Where the disk's verified chunks come from: the page's ImageReader, or the repository under Node (hostme snapshot). */
export interface ChunkReader {
  /** `priority` is a fetch priority hint: 'low' for prefetch (readers without a network may ignore it). */
  readChunk(ref: BlobRef, index: number, label: string, priority?: RequestPriority): Promise<Uint8Array>;
  /** Whether chunk `index` is a hole (no object, zeros); lets prefetch skip it. Optional: without it holes count as fetched. */
  isHole?(ref: BlobRef, index: number, label: string): Promise<boolean>;
}

const BLOCK = 256;

export interface DiskReadFailure {
  error: unknown;
  /** Try the failed reads again (e.g. after the network is back). */
  retry(): void;
}

export class V86ChunkDisk {
  readonly byteLength: number;
  onload: ((e: object) => void) | undefined;
  onprogress: ((e: object) => void) | undefined;
  /** Reads served / chunks touched, for the page's statistics. */
  readonly touchedChunks = new Set<number>();
  private readonly overlay = new Map<number, Uint8Array>();
  private readonly lru = new Map<number, Uint8Array>();
  private readonly lruLimit: number;
  private firstSector: Uint8Array | undefined;
  private failing: Array<() => void> = [];

  constructor(
    private readonly reader: ChunkReader,
    private readonly ref: BlobRef,
    private readonly label: string,
    private readonly onFailure: (failure: DiskReadFailure) => void,
    memoryBudgetBytes = 32 * 1024 * 1024,
  ) {
    this.byteLength = ref.size;
    this.lruLimit = Math.max(4, Math.floor(memoryBudgetBytes / ref.chunkSize));
  }

  load(): void {
    // Fetch the index (and the first sector, which v86 reads for the geometry) before announcing.
    this.read(0, Math.min(512, this.byteLength)).then(
      (first) => {
        this.firstSector = first;
        this.onload?.({});
      },
      (error: unknown) => this.fail(error, () => this.load()),
    );
  }

  private fail(error: unknown, again: () => void): void {
    this.failing.push(again);
    if (this.failing.length === 1) {
      this.onFailure({
        error,
        retry: () => {
          const pending = this.failing;
          this.failing = [];
          for (const f of pending) f();
        },
      });
    }
  }

  private async chunk(i: number): Promise<Uint8Array> {
    this.touchedChunks.add(i);
    const hit = this.lru.get(i);
    if (hit) {
      this.lru.delete(i);
      this.lru.set(i, hit);
      return hit;
    }
    const data = await this.reader.readChunk(this.ref, i, this.label);
    this.remember(i, data);
    return data;
  }

  private remember(i: number, data: Uint8Array): void {
    this.lru.set(i, data);
    while (this.lru.size > this.lruLimit) this.lru.delete(this.lru.keys().next().value as number);
  }

  /** How many chunks prefetch may hold in memory without evicting each other before the guest reads them. */
  get prefetchCapacity(): number {
    return Math.floor(this.lruLimit / 2);
  }

  /**
   * Loads chunk `i` into memory ahead of the guest, at low fetch priority.
   * Errors are the caller's to ignore: a prefetch never pauses the machine
   * (the guest's own read of the chunk reports a failure, through get()).
   */
  async prefetch(i: number): Promise<'fetched' | 'present' | 'hole'> {
    if (this.lru.has(i)) return 'present';
    if (i < 0 || i * this.ref.chunkSize >= this.ref.size) throw new RangeError(`${this.label}: prefetch of chunk ${i} outside the disk`);
    if (await this.reader.isHole?.(this.ref, i, this.label)) return 'hole';
    const data = await this.reader.readChunk(this.ref, i, this.label, 'low');
    if (!this.lru.has(i)) this.remember(i, data);
    return 'fetched';
  }

  /** Base image bytes [start, start+len) with the overlay applied. */
  async read(start: number, len: number): Promise<Uint8Array> {
    const out = new Uint8Array(len);
    const C = this.ref.chunkSize;
    const first = Math.floor(start / C);
    const last = Math.floor((start + len - 1) / C);
    const parts = [];
    for (let i = first; i <= last; i++) parts.push(this.chunk(i).then((data) => ({ i, data })));
    for (const { i, data } of await Promise.all(parts)) {
      const chunkStart = i * C;
      const from = Math.max(start, chunkStart);
      const to = Math.min(start + len, chunkStart + data.length);
      out.set(data.subarray(from - chunkStart, to - chunkStart), from - start);
    }
    if (this.overlay.size > 0) {
      for (let b = Math.floor(start / BLOCK); b * BLOCK < start + len; b++) {
        const block = this.overlay.get(b);
        if (!block) continue;
        const from = Math.max(start, b * BLOCK);
        const to = Math.min(start + len, (b + 1) * BLOCK);
        out.set(block.subarray(from - b * BLOCK, to - b * BLOCK), from - start);
      }
    }
    return out;
  }

  get(start: number, len: number, cb: (data: Uint8Array) => void): void {
    const attempt = (): void => {
      this.read(start, len).then(cb, (error: unknown) => this.fail(error, attempt));
    };
    attempt();
  }

  get_and_cache(start: number, len: number, cb: (data: Uint8Array) => void): void {
    this.get(start, len, cb);
  }

  get_from_cache(start: number, len: number): Uint8Array | undefined {
    if (start === 0 && this.firstSector && len <= this.firstSector.length) return this.firstSector.subarray(0, len);
    return undefined;
  }

  set(start: number, data: Uint8Array, cb: () => void): void {
    const end = start + data.length;
    const apply = (): void => {
      for (let b = Math.floor(start / BLOCK); b * BLOCK < end; b++) {
        const block = this.overlay.get(b)!;
        const from = Math.max(start, b * BLOCK);
        const to = Math.min(end, (b + 1) * BLOCK);
        block.set(data.subarray(from - start, to - start), from - b * BLOCK);
      }
      cb();
    };
    // Partial blocks need their base bytes first (copy-on-write).
    const missing: number[] = [];
    for (let b = Math.floor(start / BLOCK); b * BLOCK < end; b++) {
      if (this.overlay.has(b)) continue;
      if (b * BLOCK >= start && (b + 1) * BLOCK <= end) this.overlay.set(b, new Uint8Array(BLOCK));
      else missing.push(b);
    }
    if (missing.length === 0) {
      apply();
      return;
    }
    const attempt = (): void => {
      Promise.all(
        missing.map((b) =>
          this.read(b * BLOCK, Math.min(BLOCK, this.byteLength - b * BLOCK)).then((base) => {
            const block = new Uint8Array(BLOCK);
            block.set(base);
            if (!this.overlay.has(b)) this.overlay.set(b, block);
          }),
        ),
      ).then(apply, (error: unknown) => this.fail(error, attempt));
    };
    attempt();
  }

  get_buffer(cb: (buffer?: ArrayBuffer) => void): void {
    cb(undefined);
  }

  /** Bytes written by the guest (kept in RAM). */
  get overlayBytes(): number {
    return this.overlay.size * BLOCK;
  }

  get_state(): unknown[] {
    return [[...this.overlay.entries()]];
  }

  set_state(state: unknown[]): void {
    this.overlay.clear();
    for (const [b, block] of state[0] as Array<[number, Uint8Array]>) this.overlay.set(b, block);
  }
}
