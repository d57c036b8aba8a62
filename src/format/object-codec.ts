import { FormatError } from './errors.js';
import type { ObjectId } from './digest.js';
import { zstdDeclaredSize, type Codecs } from './codecs.js';

/**
 * Object encoding (docs/format.md "Objects"): an object is stored as one zstd
 * frame when that is strictly smaller than the raw bytes, otherwise raw. The
 * reader always knows the uncompressed length from context (the index), so the
 * rule "stored length == uncompressed length means raw" is unambiguous and needs
 * no header. Encoding (zstd-napi) is Node-only: format/node/codecs.ts.
 *
 * Decode stored bytes and check they hash to `id`: the one decoder of Node and
 * the browser. Throws FormatError 'object-invalid' (or 'object-length-mismatch').
 */
export async function decodeObject(codecs: Codecs, id: ObjectId, length: number, stored: Uint8Array, origin = 'object'): Promise<Uint8Array> {
  const data = stored.length === length ? stored : await inflate(codecs, id, length, stored, origin);
  const actual = await codecs.sha256Hex(data);
  if (actual !== id) {
    throw new FormatError('object-invalid', `${origin}: object ${id} has wrong content (its bytes hash to ${actual})`, {
      id,
      actual,
      origin,
    });
  }
  return data;
}

async function inflate(codecs: Codecs, id: ObjectId, length: number, stored: Uint8Array, origin: string): Promise<Uint8Array> {
  if (stored.length > length) {
    if ((await codecs.sha256Hex(stored)) === id) throw lengthMismatch(id, length, stored.length, origin);
    throw new FormatError('object-invalid', `${origin}: object ${id} is ${stored.length} bytes, larger than its ${length}-byte content`, { id, origin });
  }
  // Decoded into a buffer of the length the referrer declared: a frame that
  // claims (or holds) more is cut off there, never allocated (docs/format.md).
  const result = await codecs.inflateExact(stored, length);
  if (result.ok) return result.data;
  if (result.reason === 'corrupt') {
    throw new FormatError('object-invalid', `${origin}: object ${id} is not a valid zstd frame (${result.detail})`, { id, origin });
  }
  if (result.reason === 'too-long') {
    // Genuine but longer than referenced (an inconsistent index)? Only worth a
    // look when the frame declares a size close to the reference: never a bomb's.
    const declared = zstdDeclaredSize(stored);
    if (declared !== undefined && declared <= 2 * length + 1024 * 1024) {
      const whole = await codecs.inflateExact(stored, declared);
      if (whole.ok && (await codecs.sha256Hex(whole.data)) === id) throw lengthMismatch(id, length, declared, origin);
    }
  }
  if (result.reason === 'too-short') {
    // Short content that hashes to the id: the object is genuine, its referrer is wrong.
    if ((await codecs.sha256Hex(result.data)) === id) throw lengthMismatch(id, length, result.data.length, origin);
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
