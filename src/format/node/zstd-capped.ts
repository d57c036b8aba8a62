/**
 * zstd decompression that never produces more than it was told to expect.
 *
 * A zstd frame is a promise the sender makes about its content; a hostile one
 * declares (or just is) gigabytes in a few kilobytes (RLE blocks: 4 bytes per
 * 128 KiB). The convenience decoders allocate whatever the frame asks for, so
 * every hostme path decodes through these two functions instead: output goes
 * into buffers the caller sized, and decoding stops the moment the content
 * would pass the cap.
 */
import { createRequire } from 'node:module';
import type { InflateResult } from '../codecs.js';
import type * as Binding from 'zstd-napi/binding.js';

// The native binding (module.exports = the addon), loaded the CommonJS way:
// its names are not visible to ESM named imports.
const zstd = createRequire(import.meta.url)('zstd-napi/binding.js') as typeof Binding;

/** Output step of the streaming decoder: memory per decode stays near this, whatever the content size. */
const STEP_BYTES = 128 * 1024;
/**
 * Largest window a frame may ask for (2^24 = 16 MiB). hostme writes objects of
 * at most a few MiB at levels whose windows are far smaller; a frame asking for
 * zstd's default limit (128 MiB) per decode is a memory attack, not an object.
 */
export const MAX_WINDOW_LOG = 24;

export type CappedResult = InflateResult;

function context(): Binding.DCtx {
  const dctx = new zstd.DCtx();
  dctx.setParameter(zstd.DParameter.windowLogMax, MAX_WINDOW_LOG);
  return dctx;
}

/**
 * Decodes one frame whose content must be exactly `length` bytes, into one
 * buffer of length + 1 (the extra byte detects "longer than declared" without
 * producing more).
 */
export function inflateExact(stored: Uint8Array, length: number): CappedResult {
  const out = Buffer.allocUnsafe(length + 1);
  const dctx = context();
  let produced = 0;
  let consumed = 0;
  try {
    for (;;) {
      const [hint, wrote, read] = dctx.decompressStream(out.subarray(produced), stored.subarray(consumed));
      produced += wrote;
      consumed += read;
      if (produced > length) return { ok: false, reason: 'too-long', detail: `decodes to more than ${length} bytes` };
      if (hint === 0) break; // frame complete
      if (wrote === 0 && read === 0) return { ok: false, reason: 'corrupt', detail: 'the frame is truncated' };
    }
  } catch (err) {
    return { ok: false, reason: 'corrupt', detail: (err as Error).message };
  }
  if (consumed !== stored.length) return { ok: false, reason: 'corrupt', detail: `${stored.length - consumed} bytes follow the frame` };
  if (produced < length) return { ok: false, reason: 'too-short', detail: `decodes to ${produced} bytes, expected ${length}`, data: new Uint8Array(out.buffer, out.byteOffset, produced) };
  return { ok: true, data: new Uint8Array(out.buffer, out.byteOffset, length) };
}

/** The content size a frame header declares, or undefined (absent or unreadable). */
export function declaredContentSize(frameStart: Uint8Array): number | undefined {
  try {
    return zstd.getFrameContentSize(frameStart) ?? undefined;
  } catch {
    return undefined;
  }
}

/**
 * Streaming decode of one frame from an async source of compressed pieces:
 * `onContent` sees each decoded piece (at most STEP_BYTES, reused: copy it to
 * keep it); decoding stops with 'too-long' as soon as the content passes `cap`.
 * Resident memory stays at one step plus the frame's window.
 */
export async function inflateStreaming(source: AsyncIterable<Uint8Array>, cap: number, onContent: (piece: Uint8Array) => void): Promise<{ ok: true; length: number } | { ok: false; reason: 'too-long' | 'corrupt'; detail: string }> {
  const dctx = context();
  const out = Buffer.allocUnsafe(STEP_BYTES);
  let total = 0;
  let frameDone = false;
  try {
    for await (const piece of source) {
      let input = piece;
      while (input.length > 0) {
        if (frameDone) return { ok: false, reason: 'corrupt', detail: 'data follows the frame' };
        const [hint, wrote, read] = dctx.decompressStream(out, input);
        input = input.subarray(read);
        total += wrote;
        if (total > cap) return { ok: false, reason: 'too-long', detail: `decodes to more than ${cap} bytes` };
        if (wrote > 0) onContent(out.subarray(0, wrote));
        if (hint === 0) frameDone = true;
      }
      // Flush what the decoder holds back when its output step filled up.
      while (!frameDone) {
        const [hint, wrote] = dctx.decompressStream(out, new Uint8Array(0));
        total += wrote;
        if (total > cap) return { ok: false, reason: 'too-long', detail: `decodes to more than ${cap} bytes` };
        if (wrote > 0) onContent(out.subarray(0, wrote));
        if (hint === 0) frameDone = true;
        if (wrote === 0) break; // needs more input
      }
    }
  } catch (err) {
    return { ok: false, reason: 'corrupt', detail: (err as Error).message };
  }
  if (!frameDone) return { ok: false, reason: 'corrupt', detail: 'the frame is truncated' };
  return { ok: true, length: total };
}
