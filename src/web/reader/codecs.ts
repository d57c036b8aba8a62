// The page's format codecs (format/codecs.ts): WebCrypto for SHA-256 and
// Ed25519, and the reference zstd decoder compiled to WebAssembly (zstddec's
// build, about 3x faster than pure-JS fzstd on snapshot chunks: docs/web.md)
// for decoding. The WebAssembly is not inlined in the bundle as base64: the
// page fetches /_hostme/zstd.wasm beside run.js, which hostme serve sends
// brotli-compressed (docs/web.md, "Run page bytes").
import type { Codecs, InflateResult } from '../../format/codecs.js';
import { toHex } from '../../format/digest.js';

/** A plain ArrayBuffer-backed view, as WebCrypto's strict DOM typings want. */
function bufferSource(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return bytes.buffer instanceof ArrayBuffer ? (bytes as Uint8Array<ArrayBuffer>) : new Uint8Array(bytes);
}

interface ZstdExports {
  memory: WebAssembly.Memory;
  malloc(size: number): number;
  free(pointer: number): void;
  ZSTD_decompress(out: number, capacity: number, input: number, size: number): number;
  ZSTD_isError(code: number): number;
}

/** The decoder's C ABI: copy in, decompress into a buffer of `capacity`, copy out, free. */
class WasmZstd {
  constructor(private readonly wasm: ZstdExports) {}

  decode(input: Uint8Array, capacity: number): Uint8Array {
    const { wasm } = this;
    const inPtr = wasm.malloc(Math.max(1, input.length));
    const outPtr = wasm.malloc(Math.max(1, capacity));
    try {
      if (inPtr === 0 || outPtr === 0) throw new RangeError('zstd: out of memory');
      new Uint8Array(wasm.memory.buffer).set(input, inPtr); // a fresh view: malloc may have grown the memory
      const written = wasm.ZSTD_decompress(outPtr, capacity, inPtr, input.length);
      if (wasm.ZSTD_isError(written)) throw new RangeError('zstd: not a valid frame, or larger than expected');
      return new Uint8Array(wasm.memory.buffer).slice(outPtr, outPtr + written);
    } finally {
      if (inPtr) wasm.free(inPtr);
      if (outPtr) wasm.free(outPtr);
    }
  }
}

/** Fetches the decoder's WebAssembly served beside the bundle (run.js at /_hostme/ → /_hostme/zstd.wasm). */
async function fetchBesideBundle(): Promise<BufferSource> {
  const url = new URL('zstd.wasm', import.meta.url);
  const response = await fetch(url);
  if (!response.ok) throw new RangeError(`cannot load the zstd decoder from ${url.href} (HTTP ${response.status})`);
  return response.arrayBuffer();
}

let loadWasm: () => Promise<BufferSource> = fetchBesideBundle;
let decoder: Promise<WasmZstd> | undefined;

/** Where the decoder's WebAssembly comes from (Node tests hand over the built dist-web/zstd.wasm). */
export function useZstdWasm(load: () => Promise<BufferSource>): void {
  loadWasm = load;
  decoder = undefined;
}

function zstd(): Promise<WasmZstd> {
  decoder ??= (async () => {
    const { instance } = await WebAssembly.instantiate(await loadWasm(), { env: { emscripten_notify_memory_growth: () => {} } });
    return new WasmZstd(instance.exports as unknown as ZstdExports);
  })();
  decoder.catch(() => (decoder = undefined)); // a failed load is retried by the next chunk
  return decoder;
}

/** Starts loading the decoder now (the page, once it knows it will boot), so the first chunk does not wait for it; a failure shows up at the first decode. */
export function prepareZstd(): void {
  zstd().catch(() => undefined);
}

export const webCodecs: Codecs = {
  async sha256Hex(data) {
    return toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', bufferSource(data))));
  },
  async inflateExact(stored, length): Promise<InflateResult> {
    // One byte of room past `length` tells "longer than referenced" apart
    // without decoding more; zstd's own errors come back as an empty result.
    const decode = await zstd(); // a decoder that cannot load is an error, not a corrupt chunk
    let out: Uint8Array;
    try {
      out = decode.decode(stored, length + 1);
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
