// v86's disk interface over the core's disk stack. v86 accepts any object
// with byteLength, load(), get(start, len, cb), set(start, data, cb),
// get_and_cache, get_from_cache, get_buffer(cb), get_state() and set_state()
// as `hda` (see buffer.js in v86: the loadable branch of V86's constructor).
// Reads go to the image's CowOverlay (in RAM) over its ChunkedImageDevice;
// writes never reach the image.
import { COW_GRANULARITY, MemoryMedium } from '../../device/cow-overlay.js';
import type { PrefetchOutcome } from '../../device/chunked-image.js';
import type { ImageDisk } from '../../device/image-disks.js';
import { HostmeError } from '../../errors.js';

export interface DiskReadFailure {
  error: unknown;
  /** Try the failed reads again (e.g. after the network is back). */
  retry(): void;
}

export class V86ChunkDisk {
  readonly byteLength: number;
  onload: ((e: object) => void) | undefined;
  onprogress: ((e: object) => void) | undefined;
  /** Chunks the guest has read (not those only prefetched), for the page's statistics and `hostme profile`. */
  readonly touchedChunks = new Set<number>();
  private firstSector: Uint8Array | undefined;
  private failing: Array<() => void> = [];
  private restoring: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly disk: ImageDisk,
    private readonly onFailure: (failure: DiskReadFailure) => void,
  ) {
    if (!disk.overlay || !(disk.overlay.medium instanceof MemoryMedium)) {
      throw new HostmeError('disk-stack-invalid', `${disk.label}: a v86 disk needs an in-memory overlay (its state is saved with the machine)`);
    }
    this.byteLength = disk.device.size;
  }

  load(): void {
    // Fetch the first sector (v86 reads it for the geometry) before announcing.
    this.read(0, Math.min(512, this.byteLength)).then(
      (first) => {
        this.firstSector = first;
        this.onload?.({});
      },
      (error: unknown) => this.fail(error, () => this.load()),
    );
  }

  /** How many chunks prefetch may hold in memory without evicting each other before the guest reads them. */
  get prefetchCapacity(): number {
    return this.disk.image.prefetchCapacity;
  }

  /** Loads chunk `i` into memory ahead of the guest (errors are the caller's to ignore: the guest's own read reports). */
  prefetch(i: number): Promise<PrefetchOutcome> {
    return this.disk.image.prefetch(i);
  }

  /** Disk bytes [start, start+len) as the guest sees them. */
  async read(start: number, len: number): Promise<Uint8Array> {
    await this.restoring;
    const size = this.disk.image.chunkSize;
    for (let c = Math.floor(start / size); c * size < start + len; c++) this.touchedChunks.add(c);
    return this.disk.device.read(start, len);
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
    const copy = data.slice(); // v86 reuses its buffer
    const attempt = (): void => {
      this.restoring.then(() => this.disk.device.write!(start, copy)).then(cb, (error: unknown) => this.fail(error, attempt));
    };
    attempt();
  }

  get_buffer(cb: (buffer?: ArrayBuffer) => void): void {
    cb(undefined);
  }

  /** Bytes written by the guest (kept in RAM). */
  get overlayBytes(): number {
    return (this.disk.overlay?.writtenBlocks ?? 0) * COW_GRANULARITY;
  }

  /** The written blocks, saved with the machine's state. */
  get_state(): unknown[] {
    return [[...(this.disk.overlay!.medium as MemoryMedium).blocks.entries()]];
  }

  /** Written blocks of a saved state: 4 KiB blocks, or v86's 256-byte ones in states saved before. */
  set_state(state: unknown[]): void {
    const entries = (state[0] ?? []) as Array<[number, Uint8Array]>;
    this.restoring = (async () => {
      for (const [block, bytes] of entries) await this.disk.device.write!(block * bytes.length, bytes);
    })();
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
}
