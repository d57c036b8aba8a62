import { open, readFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../store/dir-transport.js';
import type { BlockDevice } from './block-device.js';
import { BlockDeviceError, checkRange } from './errors.js';

const MAP_MAGIC = 'HMCOW001';
const MAP_HEADER = 24;
export const COW_GRANULARITY = 4096;

/**
 * Copy-on-write overlay: the guest's writes go to a sparse data file beside a
 * bitmap of written 4 KiB blocks; unwritten blocks read from the base device.
 *
 * Crash safety: the bitmap on disk is replaced atomically, and only at flush
 * time after the data file was synced, so after a kill -9 every block the map
 * claims holds data that reached the disk. Writes the guest never flushed may
 * be lost, exactly as on a real disk.
 */
export class CowOverlay implements BlockDevice {
  readonly readOnly = false;
  readonly blockSize = COW_GRANULARITY;
  private dirty = false;
  private writeChain: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly base: BlockDevice,
    private readonly data: FileHandle,
    private readonly mapPath: string,
    private readonly bitmap: Uint8Array,
  ) {}

  /** Open (or create) the overlay files `overlay.data` and `overlay.map` in `dir`. */
  static async open(base: BlockDevice, dir: string): Promise<CowOverlay> {
    const mapPath = join(dir, 'overlay.map');
    const blocks = Math.ceil(base.size / COW_GRANULARITY);
    const bitmap = await loadBitmap(mapPath, base.size, blocks);
    const data = await open(join(dir, 'overlay.data'), 'a+').then(async (h) => {
      await h.close();
      return open(join(dir, 'overlay.data'), 'r+');
    });
    await data.truncate(base.size);
    return new CowOverlay(base, data, mapPath, bitmap);
  }

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
    const reads: Promise<void>[] = [];
    for (const run of this.runs(offset, length)) {
      const at = run.offset - offset;
      if (run.written) {
        reads.push(this.data.read(out, at, run.length, run.offset).then(() => {}));
      } else {
        reads.push(this.base.read(run.offset, run.length).then((bytes) => out.set(bytes, at)));
      }
    }
    await Promise.all(reads);
    return out;
  }

  write(offset: number, bytes: Uint8Array): Promise<void> {
    checkRange(this.size, offset, bytes.length);
    return this.serialized(() => this.writeBlocks(offset, bytes));
  }

  writeZeroes(offset: number, length: number): Promise<void> {
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
      await this.data.datasync().catch(toBlockError('sync the overlay'));
      if (!this.dirty) return;
      this.dirty = false;
      await writeFileAtomic(this.mapPath, encodeMap(this.size, this.bitmap)).catch((err) => {
        this.dirty = true;
        throw toBlockError('save the overlay map')(err);
      });
    });
  }

  async close(): Promise<void> {
    await this.flush();
    await this.data.close();
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
    await this.data.write(buffer, 0, buffer.length, alignedStart).catch(toBlockError('write the overlay'));
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

function toBlockError(action: string) {
  return (err: NodeJS.ErrnoException): never => {
    const errno = err.code === 'ENOSPC' || err.code === 'EDQUOT' ? 'ENOSPC' : 'EIO';
    throw new BlockDeviceError(errno, `cannot ${action}: ${err.message}`, { errnoCode: err.code }, { cause: err });
  };
}

function encodeMap(size: number, bitmap: Uint8Array): Uint8Array {
  const out = new Uint8Array(MAP_HEADER + bitmap.length);
  const view = new DataView(out.buffer);
  out.set(new TextEncoder().encode(MAP_MAGIC), 0);
  view.setUint32(8, COW_GRANULARITY, true);
  view.setUint32(12, 0, true);
  view.setBigUint64(16, BigInt(size), true);
  out.set(bitmap, MAP_HEADER);
  return out;
}

async function loadBitmap(mapPath: string, size: number, blocks: number): Promise<Uint8Array> {
  const bytes = await readFile(mapPath).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  const bitmap = new Uint8Array(Math.ceil(blocks / 8));
  if (!bytes) return bitmap;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const valid =
    bytes.length === MAP_HEADER + bitmap.length &&
    new TextDecoder().decode(bytes.subarray(0, 8)) === MAP_MAGIC &&
    view.getUint32(8, true) === COW_GRANULARITY &&
    Number(view.getBigUint64(16, true)) === size;
  if (!valid) {
    throw new BlockDeviceError('EIO', `${mapPath}: overlay map is corrupt or belongs to a disk of another size; run "hostme reset" to discard the overlay`, { mapPath });
  }
  bitmap.set(bytes.subarray(MAP_HEADER));
  return bitmap;
}
