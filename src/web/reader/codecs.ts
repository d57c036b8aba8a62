// The page's format codecs (format/codecs.ts): WebCrypto for SHA-256 and
// Ed25519, and for zstd the reference decoder that v86's own WebAssembly
// already contains (v86 links zstd's streaming decoder for its compressed
// disk images and states, and exports it as zstd_create_ctx / zstd_read /
// ...). The page downloads v86.wasm anyway, so decoding through a second,
// decoder-only instance of that same compiled module costs the page no bytes
// (docs/web.md, "Run page bytes"); the emulator's own instance is untouched.
import type { Codecs, InflateResult } from '../../format/codecs.js';
import { toHex } from '../../format/digest.js';
import { HostmeError } from '../../errors.js';

/** A plain ArrayBuffer-backed view, as WebCrypto's strict DOM typings want. */
function bufferSource(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return bytes.buffer instanceof ArrayBuffer ? (bytes as Uint8Array<ArrayBuffer>) : new Uint8Array(bytes);
}

/** v86's zstd exports (src/rust/zstd.rs in v86): one ZSTD_DStream per context over a source buffer it owns. */
interface V86Zstd {
  memory: WebAssembly.Memory;
  zstd_create_ctx(srcSize: number): number;
  zstd_get_src_ptr(ctx: number): number;
  /** Decodes the next `length` bytes into a new buffer; 0 when the stream fails or ends before `length`. */
  zstd_read(ctx: number, length: number): number;
  zstd_read_free(pointer: number, length: number): void;
  zstd_free_ctx(ctx: number): void;
}

/**
 * The largest window a frame may ask for: 2^24 bytes, as the Node decoder's
 * windowLogMax (format/node/zstd-capped.ts). The streaming decoder allocates
 * its window, so a hostile frame asking for zstd's 128 MiB default is refused
 * before it is decoded.
 */
const MAX_WINDOW = 1 << 24;
/** Read step when finding how far a frame that cannot fill its length decodes (the failure path only). */
const PROBE_STEP = 4096;

/** Window_Size of a zstd frame header (RFC 8878 §3.1.1.1.2); undefined when the header is not a frame's. */
function windowSize(frame: Uint8Array): number | undefined {
  if (frame.length < 6 || frame[0] !== 0x28 || frame[1] !== 0xb5 || frame[2] !== 0x2f || frame[3] !== 0xfd) return undefined;
  const descriptor = frame[4]!;
  if (((descriptor >> 5) & 1) === 0) {
    const exponent = frame[5]! >> 3;
    const base = 2 ** (10 + exponent);
    return base + (base / 8) * (frame[5]! & 7);
  }
  // Single segment: the window is the content size, which follows the dictionary id.
  const fcsBytes = [1, 2, 4, 8][descriptor >> 6]!;
  const at = 5 + [0, 1, 2, 4][descriptor & 3]!;
  if (frame.length < at + fcsBytes) return undefined;
  let value = 0;
  for (let i = fcsBytes - 1; i >= 0; i--) value = value * 256 + frame[at + i]!;
  return fcsBytes === 2 ? value + 256 : value;
}

class V86ZstdDecoder {
  constructor(private readonly wasm: V86Zstd) {}

  /** Runs `use` with a decoding context over a copy of `input`, freed afterwards. */
  private withContext<T>(input: Uint8Array, use: (ctx: number) => T): T {
    const { wasm } = this;
    const ctx = wasm.zstd_create_ctx(input.length);
    try {
      new Uint8Array(wasm.memory.buffer).set(input, wasm.zstd_get_src_ptr(ctx)); // a fresh view: the memory may have grown
      return use(ctx);
    } finally {
      wasm.zstd_free_ctx(ctx);
    }
  }

  /** Decodes the next `length` (≥ 1) bytes of the stream (into `into` at `at`, if given); false when it fails or ends before them. */
  private read(ctx: number, length: number, into?: Uint8Array, at = 0): boolean {
    const { wasm } = this;
    const pointer = wasm.zstd_read(ctx, length);
    if (pointer === 0) return false;
    into?.set(new Uint8Array(wasm.memory.buffer, pointer, length), at);
    wasm.zstd_read_free(pointer, length);
    return true;
  }

  /** Decodes a frame that must hold exactly `length` bytes. */
  decode(input: Uint8Array, length: number): InflateResult {
    const out = new Uint8Array(length);
    const verdict = this.withContext(input, (ctx) => {
      if (length > 0 && !this.read(ctx, length, out)) return 'short'; // zstd_read cannot take 0
      return this.read(ctx, 1) ? 'long' : 'exact'; // one byte more tells "longer than referenced" apart
    });
    if (verdict === 'exact') return { ok: true, data: out };
    if (verdict === 'long') return { ok: false, reason: 'too-long', detail: `decodes to more than ${length} bytes` };
    const prefix = this.prefix(input, length, out);
    if (prefix.length === 0) return { ok: false, reason: 'corrupt', detail: 'not a valid zstd frame' };
    // A frame that ends early and one that breaks after `prefix.length` bytes look alike
    // here; the hash of the prefix (format/object-codec.ts) tells a genuine short object apart.
    return { ok: false, reason: 'too-short', detail: `decodes to ${prefix.length} bytes, expected ${length}`, data: prefix };
  }

  /**
   * The bytes a frame yields before it ends or fails (fewer than `length`): a
   * failed zstd_read drops its partial output, so one pass counts whole steps
   * and a second one decodes those and then byte by byte up to the next step.
   */
  private prefix(input: Uint8Array, length: number, out: Uint8Array): Uint8Array {
    const steps = this.withContext(input, (ctx) => {
      let n = 0;
      while ((n + 1) * PROBE_STEP < length && this.read(ctx, PROBE_STEP)) n++;
      return n;
    });
    return this.withContext(input, (ctx) => {
      let produced = steps * PROBE_STEP;
      if (produced > 0) this.read(ctx, produced, out);
      while (produced < length && this.read(ctx, 1, out, produced)) produced++;
      return out.subarray(0, produced);
    });
  }
}

/** Imports for a decoder-only instance: v86's callbacks into the emulator must never run here. */
function decoderImports(module: WebAssembly.Module): WebAssembly.Imports {
  const env: Record<string, WebAssembly.ImportValue> = {};
  for (const { name, kind } of WebAssembly.Module.imports(module)) {
    env[name] =
      kind === 'table'
        ? new WebAssembly.Table({ element: 'anyfunc', initial: 1024 })
        : () => {
            throw new HostmeError('internal', `the zstd decoder called v86's ${name}`, { name });
          };
  }
  return { env };
}

let loadModule: () => Promise<WebAssembly.Module> = () =>
  Promise.reject(new HostmeError('internal', 'no zstd decoder: the page hands v86.wasm to useZstdModule() first'));
let decoder: Promise<V86ZstdDecoder> | undefined;

/** Where v86's compiled WebAssembly comes from: the page passes the module it compiles for the emulator (one download, one compile). */
export function useZstdModule(load: () => Promise<WebAssembly.Module>): void {
  loadModule = load;
  decoder = undefined;
}

function zstd(): Promise<V86ZstdDecoder> {
  decoder ??= (async () => {
    const module = await loadModule();
    const instance = await WebAssembly.instantiate(module, decoderImports(module));
    return new V86ZstdDecoder(instance.exports as unknown as V86Zstd);
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
    const window = windowSize(stored);
    if (window === undefined) return { ok: false, reason: 'corrupt', detail: 'not a valid zstd frame' };
    if (window > MAX_WINDOW) return { ok: false, reason: 'corrupt', detail: `the frame asks for a ${window}-byte window (at most ${MAX_WINDOW})` };
    const pending = zstd(); // a decoder that cannot load is an error, not a corrupt chunk
    const current = await pending;
    try {
      return current.decode(stored, length);
    } catch (err) {
      // A trap inside the decoder (out of memory) may leave its heap inconsistent: start a fresh instance next time.
      if (decoder === pending) decoder = undefined;
      return { ok: false, reason: 'corrupt', detail: `the zstd decoder failed: ${(err as Error).message}` };
    }
  },
  async verifyEd25519(publicKey, message, signature) {
    const key = await crypto.subtle.importKey('raw', bufferSource(publicKey), { name: 'Ed25519' }, false, ['verify']);
    return crypto.subtle.verify({ name: 'Ed25519' }, key, bufferSource(signature), bufferSource(message));
  },
};
