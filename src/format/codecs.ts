/**
 * The platform primitives the format needs, injected rather than imported so
 * that format/, store/ and device/ run unchanged in Node and in a browser:
 * Node passes node:crypto and zstd-napi (format/node/codecs.ts: fast, native,
 * synchronous), the page passes WebCrypto and the zstd decoder inside v86's WebAssembly
 * (web/reader/codecs.ts).
 * A method may answer synchronously or with a promise; callers await either.
 */
export type MaybePromise<T> = T | Promise<T>;

/** One zstd frame decoded into at most `length` bytes (never more: hostile frames declare gigabytes). */
export type InflateResult =
  | { ok: true; data: Uint8Array }
  | { ok: false; reason: 'too-short'; detail: string; data: Uint8Array }
  | { ok: false; reason: 'too-long' | 'corrupt'; detail: string };

export interface Codecs {
  /** Hex SHA-256 of the bytes. */
  sha256Hex(data: Uint8Array): MaybePromise<string>;
  /** Decode one zstd frame whose content must be exactly `length` bytes, into a buffer of that size. */
  inflateExact(stored: Uint8Array, length: number): MaybePromise<InflateResult>;
  /** Ed25519 (RFC 8032) verification of `signature` over `message` with a 32-byte raw public key. */
  verifyEd25519(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): MaybePromise<boolean>;
}

/** Frame_Content_Size from a zstd frame header (RFC 8878 §3.1.1.1); undefined when absent or not a frame. */
export function zstdDeclaredSize(frame: Uint8Array): number | undefined {
  if (frame.length < 6 || frame[0] !== 0x28 || frame[1] !== 0xb5 || frame[2] !== 0x2f || frame[3] !== 0xfd) return undefined;
  const descriptor = frame[4]!;
  const singleSegment = (descriptor >> 5) & 1;
  const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][descriptor >> 6]!;
  if (fcsBytes === 0) return undefined;
  const at = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][descriptor & 3]!;
  if (frame.length < at + fcsBytes) return undefined;
  let value = 0;
  for (let i = fcsBytes - 1; i >= 0; i--) value = value * 256 + frame[at + i]!;
  return fcsBytes === 2 ? value + 256 : value;
}
