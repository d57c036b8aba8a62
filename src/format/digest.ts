/**
 * Object ids and the byte helpers every layer shares. Web-standard only
 * (Uint8Array, no Buffer): the browser bundles this file as it is. Hashing is
 * a codec (format/codecs.ts), injected by the platform adapter.
 */

/** Hex SHA-256: the object id of a chunk, index or blob part. */
export type ObjectId = string;
export const ID_BYTES = 32;
export const ID_PATTERN = /^[0-9a-f]{64}$/;
/** The id field value that marks an all-zero chunk (a hole, no object). */
export const HOLE_ID: ObjectId = '0'.repeat(64);

export function isObjectId(value: string): boolean {
  return ID_PATTERN.test(value);
}

export function isAllZero(data: Uint8Array): boolean {
  // Compare 8 bytes at a time where alignment allows; chunks are large.
  const words = Math.floor(data.byteLength / 8);
  if ((data.byteOffset & 7) === 0 && words > 0) {
    const view = new BigUint64Array(data.buffer, data.byteOffset, words);
    for (let i = 0; i < words; i++) if (view[i] !== 0n) return false;
    for (let i = words * 8; i < data.byteLength; i++) if (data[i] !== 0) return false;
    return true;
  }
  for (let i = 0; i < data.byteLength; i++) if (data[i] !== 0) return false;
  return true;
}

/** Path of an object inside a repository or cache: objects/ab/abcdef… */
export function objectPath(id: ObjectId): string {
  return `objects/${id.slice(0, 2)}/${id}`;
}

const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, '0'));
const NIBBLE = new Uint8Array(128);
for (let i = 0; i < 16; i++) {
  NIBBLE['0123456789abcdef'.charCodeAt(i)] = i;
  NIBBLE['0123456789ABCDEF'.charCodeAt(i)] = i;
}

export function toHex(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i++) out += HEX[bytes[i]!];
  return out;
}

const HEX_ASCII = new TextEncoder().encode('0123456789abcdef');
const utf8 = new TextDecoder();

/**
 * Hex ids of `count` consecutive 32-byte ids: one ASCII buffer decoded once
 * (decoders take a fast path for ASCII), then sliced. Indexes hold up to
 * millions of ids; per-id string building is several times slower.
 */
export function hexIds(bytes: Uint8Array, count: number, width = ID_BYTES): string[] {
  const ascii = new Uint8Array(count * width * 2);
  for (let i = 0; i < ascii.length >> 1; i++) {
    const b = bytes[i]!;
    ascii[2 * i] = HEX_ASCII[b >> 4]!;
    ascii[2 * i + 1] = HEX_ASCII[b & 15]!;
  }
  const text = utf8.decode(ascii);
  const ids = new Array<string>(count);
  for (let i = 0; i < count; i++) ids[i] = text.slice(i * width * 2, (i + 1) * width * 2);
  return ids;
}

/** Writes the bytes of a hex string (shape validated by the caller) into `out` at `at`. */
export function hexInto(hex: string, out: Uint8Array, at = 0): void {
  for (let i = 0, n = hex.length >> 1; i < n; i++) out[at + i] = (NIBBLE[hex.charCodeAt(2 * i) & 127]! << 4) | NIBBLE[hex.charCodeAt(2 * i + 1) & 127]!;
}

export function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length >> 1);
  hexInto(hex, out);
  return out;
}

export const BASE64_PATTERN = /^[A-Za-z0-9+/]*={0,2}$/;

/** Standard base64 (RFC 4648 §4) with padding; undefined for text that is not. */
export function fromBase64(text: string): Uint8Array | undefined {
  if (!BASE64_PATTERN.test(text) || text.length % 4 !== 0) return undefined;
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function toBase64(bytes: Uint8Array): string {
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

export function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
