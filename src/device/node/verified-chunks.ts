import { mkdir, open, readFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChunkIndex } from '../../format/chunk-index.js';
import { chunkLength } from '../../format/chunk-index.js';
import { writeFileAtomic } from '../../store/node/dir-transport.js';
import type { VerifiedChunks } from '../chunked-image.js';
import { BlockDeviceError } from '../errors.js';
import { preadFully } from './pread.js';

const MAP_MAGIC = 'HMVER001';
const MAP_HEADER = 24;

/**
 * Verify once: decoded chunks of one blob that were already verified
 * (SHA-256 against the signed index), kept in a sparse local file at their
 * offsets, with a bitmap of the chunks present (like qcow2 copy-on-read).
 * A later run reads them back without decompressing or hashing again; the
 * content-addressed object cache stays the source of truth.
 *
 * Crash safety: a chunk's bit is set in the on-disk map only after its bytes
 * were written *and* the data file was synced, and the map is replaced
 * atomically; so after a kill -9 every chunk the map claims holds exactly
 * the verified bytes. Chunks written but not yet recorded are simply fetched
 * (and verified) again. Files: `DIR/data` and `DIR/map`, DIR named after the
 * index id (one per blob, shared by every instance; two writers only ever
 * write identical bytes, and a bit one of them loses is only a re-fetch).
 */
export class VerifiedChunkFile implements VerifiedChunks {
  private readonly pending = new Set<number>();
  private flushing: Promise<void> | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private broken = false;

  private constructor(
    private readonly index: ChunkIndex,
    private readonly data: FileHandle,
    private readonly mapPath: string,
    private readonly bitmap: Uint8Array,
    private readonly flushDelayMs: number,
  ) {}

  static async open(dir: string, index: ChunkIndex, options: { flushDelayMs?: number } = {}): Promise<VerifiedChunkFile> {
    await mkdir(dir, { recursive: true });
    const mapPath = join(dir, 'map');
    const bitmap = await loadMap(mapPath, index);
    const dataPath = join(dir, 'data');
    await (await open(dataPath, 'a')).close();
    const data = await open(dataPath, 'r+');
    return new VerifiedChunkFile(index, data, mapPath, bitmap, options.flushDelayMs ?? 1000);
  }

  has(chunk: number): boolean {
    return (this.bitmap[chunk >> 3]! & (1 << (chunk & 7))) !== 0;
  }

  /** The verified bytes of a chunk the map claims. */
  async read(chunk: number): Promise<Uint8Array> {
    // Every byte is overwritten (or the read fails): no need to zero it first.
    const buffer = Buffer.allocUnsafeSlow(chunkLength(this.index, chunk));
    const out = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.length);
    await this.readRange(out, chunk * this.index.chunkSize);
    return out;
  }

  /**
   * Fill `into` with the blob's bytes at `offset`, in one positional read:
   * the caller checked that every chunk the range touches is claimed (has()).
   */
  async readRange(into: Uint8Array, offset: number): Promise<void> {
    const bytesRead = await preadFully(this.data.fd, into, offset);
    if (bytesRead !== into.length) {
      throw new BlockDeviceError('EIO', `verified chunks at ${offset}: short read (${bytesRead} of ${into.length} bytes)`, { offset, length: into.length });
    }
  }

  /** Keep a just-verified chunk; it is recorded in the map at the next flush. Never throws. */
  async record(chunk: number, bytes: Uint8Array): Promise<void> {
    if (this.broken || this.has(chunk) || this.pending.has(chunk)) return;
    try {
      await this.data.write(bytes, 0, bytes.length, chunk * this.index.chunkSize);
      this.pending.add(chunk);
      this.timer ??= setTimeout(() => void this.flush(), this.flushDelayMs);
    } catch {
      this.broken = true; // disk full or read-only: run without it
    }
  }

  /** Sync the data, then atomically publish the bits of everything written so far. */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const run = async () => {
      if (this.broken || this.pending.size === 0) return;
      const chunks = [...this.pending];
      this.pending.clear();
      try {
        await this.data.datasync();
        const next = this.bitmap.slice();
        for (const c of chunks) next[c >> 3]! |= 1 << (c & 7);
        await writeFileAtomic(this.mapPath, encodeMap(this.index, next));
        this.bitmap.set(next);
      } catch {
        this.broken = true;
      }
    };
    this.flushing = (this.flushing ?? Promise.resolve()).then(run);
    return this.flushing;
  }

  async close(): Promise<void> {
    await this.flush();
    await this.data.close().catch(() => {});
  }
}

function encodeMap(index: ChunkIndex, bitmap: Uint8Array): Uint8Array {
  const out = new Uint8Array(MAP_HEADER + bitmap.length);
  const view = new DataView(out.buffer);
  out.set(new TextEncoder().encode(MAP_MAGIC), 0);
  view.setUint32(8, index.chunkSize, true);
  view.setBigUint64(16, BigInt(index.size), true);
  out.set(bitmap, MAP_HEADER);
  return out;
}

/** The saved bitmap, or an empty one (missing, or not this blob's: start over, nothing is lost but time). */
async function loadMap(mapPath: string, index: ChunkIndex): Promise<Uint8Array> {
  const bitmap = new Uint8Array(Math.ceil(index.ids.length / 8));
  const bytes = await readFile(mapPath).catch(() => null);
  if (!bytes || bytes.length !== MAP_HEADER + bitmap.length) return bitmap;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const valid =
    new TextDecoder().decode(bytes.subarray(0, 8)) === MAP_MAGIC &&
    view.getUint32(8, true) === index.chunkSize &&
    Number(view.getBigUint64(16, true)) === index.size;
  if (valid) bitmap.set(bytes.subarray(MAP_HEADER));
  return bitmap;
}
