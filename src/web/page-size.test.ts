// The run page's transferred bytes (brotli, as hostme serve sends them) stay within a committed budget:
// a dependency or a Node-shaped module pulled into the bundle fails here, not in a user's first visit.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, constants } from 'node:zlib';

const DIST_WEB = fileURLToPath(new URL('../../dist-web/', import.meta.url));

/**
 * Bytes (brotli quality 11) of what the page always loads of its own: run.js (v86 itself, libv86.mjs
 * and v86.wasm, is counted apart: it is pinned upstream code, and the page's zstd decoder is the one
 * inside v86.wasm, src/web/reader/codecs.ts). History: 108,647 before the core merge; 115,798 after it
 * (run.js 99,470 + zstddec's zstd.wasm 16,328); 120,077 with the tab as a WebRTC peer (+4,279),
 * 120,286 the last build with zstddec (run.js 103,958 + zstd.wasm 16,328).
 * Measured 2026-11-30 after decoding through v86's WebAssembly instead of zstd.wasm: run.js 104,248
 * (xterm.js 74,615, zod/mini ~8,700, hostme ~20,900): 4,399 under the pre-merge figure; 104,739
 * with the flash-crowd GET_WAIT message in the shared peer wire code (+491). Budget: that plus ~250.
 */
export const RUN_PAGE_BUDGET = 105_000;

const brotliSize = (bytes: Uint8Array) => brotliCompressSync(bytes, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }).length;

test('the run page (run.js, brotli) stays within its byte budget', async () => {
  const sizes: Record<string, number> = {};
  for (const file of ['run.js']) {
    // No bundle is a failure (scripts/build-web.sh is part of the build), never a skip.
    sizes[file] = brotliSize(await readFile(DIST_WEB + file));
  }
  const total = Object.values(sizes).reduce((a, b) => a + b, 0);
  assert.ok(total <= RUN_PAGE_BUDGET, `the run page is ${total} bytes brotli (${JSON.stringify(sizes)}), over its budget of ${RUN_PAGE_BUDGET}: see scripts/build-web.sh for measuring with esbuild's metafile`);
});
