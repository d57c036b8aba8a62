// The page's format codecs (format/codecs.ts): WebCrypto for SHA-256 and
// Ed25519, zstddec (the reference zstd decoder in WebAssembly, about 3x faster
// than pure-JS fzstd on snapshot chunks: docs/web.md) for decoding.
import { ZSTDDecoder } from 'zstddec';
import type { Codecs, InflateResult } from '../../format/codecs.js';
import { toHex } from '../../format/digest.js';

/** A plain ArrayBuffer-backed view, as WebCrypto's strict DOM typings want. */
function bufferSource(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return bytes.buffer instanceof ArrayBuffer ? (bytes as Uint8Array<ArrayBuffer>) : new Uint8Array(bytes);
}

let decoder: Promise<ZSTDDecoder> | undefined;
function zstd(): Promise<ZSTDDecoder> {
  decoder ??= (async () => {
    const d = new ZSTDDecoder();
    await d.init();
    return d;
  })();
  return decoder;
}

export const webCodecs: Codecs = {
  async sha256Hex(data) {
    return toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', bufferSource(data))));
  },
  async inflateExact(stored, length): Promise<InflateResult> {
    // One byte of room past `length` tells "longer than referenced" apart
    // without decoding more; zstd's own errors come back as an empty result.
    let out: Uint8Array;
    try {
      out = (await zstd()).decode(stored, length + 1);
    } catch (err) {
      return { ok: false, reason: 'corrupt', detail: (err as Error).message };
    }
    if (out.length === length) return { ok: true, data: out };
    if (out.length === length + 1) return { ok: false, reason: 'too-long', detail: `decodes to more than ${length} bytes` };
    if (out.length === 0 || out.length > length + 1) return { ok: false, reason: 'corrupt', detail: 'not a valid zstd frame' };
    return { ok: false, reason: 'too-short', detail: `decodes to ${out.length} bytes, expected ${length}`, data: out };
  },
  async verifyEd25519(publicKey, message, signature) {
    const key = await crypto.subtle.importKey('raw', bufferSource(publicKey), { name: 'Ed25519' }, false, ['verify']);
    return crypto.subtle.verify({ name: 'Ed25519' }, key, bufferSource(signature), bufferSource(message));
  },
};
