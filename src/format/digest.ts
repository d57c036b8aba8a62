import { createHash } from 'node:crypto';

/** Hex SHA-256: the object id of a chunk, index or blob part. */
export type ObjectId = string;

export const ID_BYTES = 32;
export const ID_PATTERN = /^[0-9a-f]{64}$/;
/** The id field value that marks an all-zero chunk (a hole, no object). */
export const HOLE_ID: ObjectId = '0'.repeat(64);

export function sha256Hex(data: Uint8Array): ObjectId {
  return createHash('sha256').update(data).digest('hex');
}

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
