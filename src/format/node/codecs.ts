import { createHash, createPublicKey, verify } from 'node:crypto';
import { compress } from 'zstd-napi';
import type { Codecs } from '../codecs.js';
import type { ObjectId } from '../digest.js';
import { inflateExact } from './zstd-capped.js';

/**
 * Node adapter of the format codecs: node:crypto and zstd-napi, native and
 * synchronous (no copy, no extra turn of the event loop on the read path).
 */
export function sha256Hex(data: Uint8Array): ObjectId {
  return createHash('sha256').update(data).digest('hex');
}

// SPKI DER prefix for an Ed25519 public key (RFC 8410): the raw key follows.
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export const nodeCodecs: Codecs = {
  sha256Hex,
  inflateExact,
  verifyEd25519(publicKey, message, signature) {
    const key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' });
    return verify(null, message, key, signature);
  },
};

/** Object encoding (docs/format.md "Objects"): zstd level 3 when strictly smaller, else raw. */
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
