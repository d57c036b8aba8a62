import type { BlockDevice } from './block-device.js';
import { checkRange } from './errors.js';

export const COW_GRANULARITY = 4096;

/**
 * Where an overlay keeps the blocks the guest wrote: a sparse file plus a map
 * file in Node (device/node/cow-file.ts), RAM in a page. Offsets are bytes of
 * the device; writes are whole 4 KiB blocks.
 */
export interface OverlayMedium {
  read(into: Uint8Array, at: number, length: number, offset: number): Promise<void>;
  write(data: Uint8Array, offset: number): Promise<void>;
  /** Make every earlier write, and the bitmap of written blocks, durable. */
  persist(bitmap: Uint8Array, dirty: boolean): Promise<void>;
  close(): Promise<void>;
}

/** Blocks written, in RAM (the browser, tests): gone when the page is. */
export class MemoryMedium implements OverlayMedium {
  readonly blocks = new Map<number, Uint8Array>();

  async read(into: Uint8Array, at: number, length: number, offset: number): Promise<void> {
    for (let done = 0; done < length; ) {
      const block = Math.floor((offset + done) / COW_GRANULARITY);
      const within = (offset + done) % COW_GRANULARITY;
      const n = Math.min(COW_GRANULARITY - within, length - done);
      const bytes = this.blocks.get(block);
      if (bytes) into.set(bytes.subarray(within, within + n), at + done);
      else into.fill(0, at + done, at + done + n);
      done += n;
    }
  }

  async write(data: Uint8Array, offset: number): Promise<void> {
    for (let done = 0; done < data.length; done += COW_GRANULARITY) {
      const block = new Uint8Array(COW_GRANULARITY);
      block.set(data.subarray(done, done + COW_GRANULARITY));
      this.blocks.set((offset + done) / COW_GRANULARITY, block);
    }
  }

  async persist(): Promise<void> {}

  async close(): Promise<void> {}
}

/**
 * Copy-on-write overlay: the guest's writes go to a medium beside a bitmap of
 * written 4 KiB blocks; unwritten blocks read from the base device.
 *
 * Crash safety (file medium): the bitmap on disk is replaced atomically, and
 * only at flush time after the data file was synced, so after a kill -9 every
 * block the map claims holds data that reached the disk. Writes the guest
 * never flushed may be lost, exactly as on a real disk.
 */
export class CowOverlay implements BlockDevice {
  readonly readOnly = false;
  readonly blockSize = COW_GRANULARITY;
  private dirty = false;
  private writeChain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly base: BlockDevice,
    readonly medium: OverlayMedium = new MemoryMedium(),
    private readonly bitmap: Uint8Array = new Uint8Array(Math.ceil(Math.ceil(base.size / COW_GRANULARITY) / 8)),
  ) {}

  get size(): number {
    return this.base.size;
  }

  /** Number of 4 KiB blocks the guest has written. */
  get writtenBlocks(): number {
    let count = 0;
    for (const byte of this.bitmap) for (let b = byte; b; b &= b - 1) count++;
    return count;
  }

  isWritten(block: number): boolean {
    return (this.bitmap[block >> 3]! & (1 << (block & 7))) !== 0;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(this.size, offset, length);
    // Most reads touch nothing the guest wrote: hand the base's (fresh) buffer through.
    if (!this.anyWritten(offset, length)) return this.base.read(offset, length);
    const out = new Uint8Array(length);
    await this.readRuns(out, offset);
    return out;
  }

  /** Fill `into` (the NBD server's reply buffer): straight from the base when the guest wrote nothing there. */
  async readInto(into: Uint8Array, offset: number): Promise<void> {
    checkRange(this.size, offset, into.length);
    if (!this.anyWritten(offset, into.length)) return this.readBase(into, offset);
    await this.readRuns(into, offset);
  }

  private readBase(into: Uint8Array, offset: number): Promise<void> {
    if (this.base.readInto) return this.base.readInto(into, offset);
    return this.base.read(offset, into.length).then((bytes) => into.set(bytes));
  }

  private async readRuns(into: Uint8Array, offset: number): Promise<void> {
    const reads: Promise<void>[] = [];
    for (const run of this.runs(offset, into.length)) {
      const at = run.offset - offset;
      if (run.written) reads.push(this.medium.read(into, at, run.length, run.offset));
      else reads.push(this.readBase(into.subarray(at, at + run.length), run.offset));
    }
    await Promise.all(reads);
  }

  async write(offset: number, bytes: Uint8Array): Promise<void> {
    checkRange(this.size, offset, bytes.length);
    return this.serialized(() => this.writeBlocks(offset, bytes));
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    checkRange(this.size, offset, length);
    return this.serialized(async () => {
      const step = 1 << 20;
      for (let at = offset; at < offset + length; at += step) {
        await this.writeBlocks(at, new Uint8Array(Math.min(step, offset + length - at)));
      }
    });
  }

  /** Discarded blocks read back as zeros: the safe reading of TRIM. */
  trim(offset: number, length: number): Promise<void> {
    return this.writeZeroes(offset, length);
  }

  flush(): Promise<void> {
    return this.serialized(async () => {
      const dirty = this.dirty;
      this.dirty = false;
      await this.medium.persist(this.bitmap, dirty).catch((err: unknown) => {
        this.dirty ||= dirty;
        throw err;
      });
    });
  }

  async close(): Promise<void> {
    await this.flush();
    await this.medium.close();
  }

  private async writeBlocks(offset: number, bytes: Uint8Array): Promise<void> {
    const firstBlock = Math.floor(offset / COW_GRANULARITY);
    const lastBlock = Math.floor((offset + bytes.length - 1) / COW_GRANULARITY);
    const alignedStart = firstBlock * COW_GRANULARITY;
    const alignedEnd = Math.min(this.size, (lastBlock + 1) * COW_GRANULARITY);
    let buffer = bytes;
    if (alignedStart !== offset || alignedEnd !== offset + bytes.length) {
      // Partial blocks: merge with what the block holds now (overlay or base).
      buffer = await this.read(alignedStart, alignedEnd - alignedStart);
      buffer.set(bytes, offset - alignedStart);
    }
    await this.medium.write(buffer, alignedStart);
    for (let block = firstBlock; block <= lastBlock; block++) this.bitmap[block >> 3]! |= 1 << (block & 7);
    this.dirty = true;
  }

  private anyWritten(offset: number, length: number): boolean {
    if (length === 0) return false;
    const last = Math.floor((offset + length - 1) / COW_GRANULARITY);
    for (let block = Math.floor(offset / COW_GRANULARITY); block <= last; block++) {
      // Skip whole zero bytes of the bitmap (8 blocks) at a time.
      if ((block & 7) === 0 && block + 7 <= last && this.bitmap[block >> 3] === 0) {
        block += 7;
        continue;
      }
      if (this.isWritten(block)) return true;
    }
    return false;
  }

  private *runs(offset: number, length: number): Generator<{ offset: number; length: number; written: boolean }> {
    let at = offset;
    const end = offset + length;
    while (at < end) {
      const written = this.isWritten(Math.floor(at / COW_GRANULARITY));
      let next = (Math.floor(at / COW_GRANULARITY) + 1) * COW_GRANULARITY;
      while (next < end && this.isWritten(next / COW_GRANULARITY) === written) next += COW_GRANULARITY;
      const stop = Math.min(next, end);
      yield { offset: at, length: stop - at, written };
      at = stop;
    }
  }

  private serialized<T>(work: () => Promise<T>): Promise<T> {
    const result = this.writeChain.then(work, work);
    this.writeChain = result.catch(() => {});
    return result;
  }
}

