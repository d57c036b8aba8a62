import { FormatError } from './errors.js';
import { HOLE_ID, ID_BYTES, hexIds, hexInto, type ObjectId } from './digest.js';

/**
 * The chunk index of a disk or blob (docs/format.md "Index"): a fixed 32-byte
 * header then one 32-byte SHA-256 per chunk; an all-zero id marks a hole.
 *
 *   0  8  magic "HOSTMEIX"
 *   8  4  u32 LE index format version (1)
 *  12  4  u32 LE chunk size (power of two, 64 KiB .. 4 MiB)
 *  16  8  u64 LE content size in bytes
 *  24  8  u64 LE chunk count = ceil(size / chunkSize)
 *  32  …  chunk ids
 */
export const INDEX_MAGIC = 'HOSTMEIX';
export const INDEX_VERSION = 1;
export const INDEX_HEADER_BYTES = 32;
export const MIN_CHUNK_SIZE = 64 * 1024;
export const MAX_CHUNK_SIZE = 4 * 1024 * 1024;
/** Chosen by measurement, see docs/format.md "Choosing the chunk size". */
export const DEFAULT_CHUNK_SIZE = 256 * 1024;

export interface ChunkIndex {
  chunkSize: number;
  size: number;
  /** One id per chunk; HOLE_ID for all-zero chunks. */
  ids: ObjectId[];
}

export function validateChunkSize(chunkSize: number): void {
  const isPowerOfTwo = Number.isInteger(chunkSize) && chunkSize > 0 && (chunkSize & (chunkSize - 1)) === 0;
  if (!isPowerOfTwo || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) {
    throw new FormatError('chunk-size-invalid', `chunk size ${chunkSize} must be a power of two between 64 KiB and 4 MiB`, { chunkSize });
  }
}

export function chunkCountFor(size: number, chunkSize: number): number {
  return Math.ceil(size / chunkSize);
}

/** Byte length of the serialized index for a given content size (the uncompressed object length). */
export function indexByteLength(size: number, chunkSize: number): number {
  return INDEX_HEADER_BYTES + ID_BYTES * chunkCountFor(size, chunkSize);
}

/** Uncompressed length of chunk `i` (the last chunk may be short). */
export function chunkLength(index: Pick<ChunkIndex, 'size' | 'chunkSize'>, i: number): number {
  return Math.min(index.chunkSize, index.size - i * index.chunkSize);
}

export function encodeIndex(index: ChunkIndex): Uint8Array {
  validateChunkSize(index.chunkSize);
  const count = chunkCountFor(index.size, index.chunkSize);
  if (index.ids.length !== count) {
    throw new FormatError('index-corrupt', `index has ${index.ids.length} ids but ${count} chunks are needed for ${index.size} bytes`);
  }
  const out = new Uint8Array(INDEX_HEADER_BYTES + ID_BYTES * count);
  const view = new DataView(out.buffer);
  out.set(new TextEncoder().encode(INDEX_MAGIC), 0);
  view.setUint32(8, INDEX_VERSION, true);
  view.setUint32(12, index.chunkSize, true);
  view.setBigUint64(16, BigInt(index.size), true);
  view.setBigUint64(24, BigInt(count), true);
  index.ids.forEach((id, i) => hexInto(id, out, INDEX_HEADER_BYTES + i * ID_BYTES));
  return out;
}

/** The one chunk index parser (Node and browser); `expect` checks it against the manifest's reference. */
export function decodeIndex(bytes: Uint8Array, origin = 'index', expect?: { size: number; chunkSize: number }): ChunkIndex {
  const fail = (why: string): never => {
    throw new FormatError('index-corrupt', `${origin}: ${why}`, { origin });
  };
  if (bytes.length < INDEX_HEADER_BYTES) fail(`only ${bytes.length} bytes, shorter than the 32-byte header`);
  const magic = new TextDecoder().decode(bytes.subarray(0, 8));
  if (magic !== INDEX_MAGIC) fail(`bad magic ${JSON.stringify(magic)} (not a hostme chunk index)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== INDEX_VERSION) {
    throw new FormatError('format-unsupported', `${origin}: chunk index version ${version} is not supported by this hostme (reads version ${INDEX_VERSION}); upgrade hostme`, { origin, version });
  }
  const chunkSize = view.getUint32(12, true);
  validateChunkSize(chunkSize);
  const size = Number(view.getBigUint64(16, true));
  const count = Number(view.getBigUint64(24, true));
  if (!Number.isSafeInteger(size)) fail(`content size is out of range`);
  if (count !== chunkCountFor(size, chunkSize)) fail(`chunk count ${count} does not match size ${size} / chunk size ${chunkSize}`);
  const expected = INDEX_HEADER_BYTES + ID_BYTES * count;
  if (bytes.length !== expected) fail(`${bytes.length} bytes, expected ${expected} for ${count} chunks (truncated or padded)`);
  if (expect && (expect.size !== size || expect.chunkSize !== chunkSize)) fail(`describes ${size} bytes in ${chunkSize}-byte chunks, the manifest says ${expect.size} in ${expect.chunkSize}`);
  const ids: ObjectId[] = hexIds(bytes.subarray(INDEX_HEADER_BYTES), count);
  return { chunkSize, size, ids };
}

export function isHole(id: ObjectId): boolean {
  return id === HOLE_ID;
}

export interface IndexStats {
  chunks: number;
  holes: number;
  distinct: number;
}

export function indexStats(index: ChunkIndex): IndexStats {
  const distinct = new Set<string>();
  let holes = 0;
  for (const id of index.ids) {
    if (isHole(id)) holes++;
    else distinct.add(id);
  }
  return { chunks: index.ids.length, holes, distinct: distinct.size };
}
