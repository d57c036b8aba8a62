import { compress } from 'zstd-napi';
import { FormatError } from './errors.js';
import { sha256Hex, type ObjectId } from './digest.js';
import { declaredContentSize, inflateExact } from './zstd-capped.js';

/**
 * Object encoding (docs/format.md "Objects"): an object is stored as one zstd
 * frame when that is strictly smaller than the raw bytes, otherwise raw. The
 * reader always knows the uncompressed length from context (the index), so the
 * rule "stored length == uncompressed length means raw" is unambiguous and needs
 * no header.
 */
export const ZSTD_LEVEL = 3;

export interface EncodedObject {
  id: ObjectId;
  /** Uncompressed length. */
  length: number;
  /** Bytes as stored in a repository or cache. */
  stored: Uint8Array;
}

export function encodeObject(data: Uint8Array, level = ZSTD_LEVEL): EncodedObject {
  const id = sha256Hex(data);
  const packed = compress(data, { compressionLevel: level });
  const stored = packed.length < data.length ? new Uint8Array(packed.buffer, packed.byteOffset, packed.length) : data;
  return { id, length: data.length, stored };
}

/** Decode stored bytes and check they hash to `id`. Throws FormatError 'object-invalid'. */
export function decodeObject(id: ObjectId, length: number, stored: Uint8Array, origin = 'object'): Uint8Array {
  const data = stored.length === length ? stored : inflate(id, length, stored, origin);
  const actual = sha256Hex(data);
  if (actual !== id) {
    throw new FormatError('object-invalid', `${origin}: object ${id} has wrong content (its bytes hash to ${actual})`, {
      id,
      actual,
      origin,
    });
  }
  return data;
}

function inflate(id: ObjectId, length: number, stored: Uint8Array, origin: string): Uint8Array {
  if (stored.length > length) {
    if (sha256Hex(stored) === id) throw lengthMismatch(id, length, stored.length, origin);
    throw new FormatError('object-invalid', `${origin}: object ${id} is ${stored.length} bytes, larger than its ${length}-byte content`, { id, origin });
  }
  // Decoded into a buffer of the length the referrer declared: a frame that
  // claims (or holds) more is cut off there, never allocated (docs/format.md).
  const result = inflateExact(stored, length);
  if (result.ok) return result.data;
  if (result.reason === 'corrupt') {
    throw new FormatError('object-invalid', `${origin}: object ${id} is not a valid zstd frame (${result.detail})`, { id, origin });
  }
  if (result.reason === 'too-long') {
    // Genuine but longer than referenced (an inconsistent index)? Only worth a
    // look when the frame declares a size close to the reference: never a bomb's.
    const declared = declaredContentSize(stored);
    if (declared !== undefined && declared <= 2 * length + 1024 * 1024) {
      const whole = inflateExact(stored, declared);
      if (whole.ok && sha256Hex(whole.data) === id) throw lengthMismatch(id, length, declared, origin);
    }
  }
  if (result.reason === 'too-short') {
    // Short content that hashes to the id: the object is genuine, its referrer is wrong.
    if (sha256Hex(result.data) === id) throw lengthMismatch(id, length, result.data.length, origin);
  }
  throw new FormatError('object-invalid', `${origin}: object ${id} ${result.detail}`, { id, origin, length });
}

/**
 * The bytes are the genuine object (they hash to its id) but the length the
 * referrer claimed is wrong: the index or manifest that referenced it is
 * inconsistent, not the store that served it. A distinct code, so mirrors and
 * caches are not blamed for a bad reference.
 */
function lengthMismatch(id: ObjectId, length: number, actualLength: number, origin: string): FormatError {
  return new FormatError(
    'object-length-mismatch',
    `${origin}: object ${id} is ${actualLength} bytes, but was referenced as ${length} bytes (the index or manifest referring to it is inconsistent)`,
    { id, origin, length, actualLength },
  );
}
