// The run page's transferred bytes (brotli, as hostme serve sends them) stay within a committed budget:
// a dependency or a Node-shaped module pulled into the bundle fails here, not in a user's first visit.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, constants } from 'node:zlib';

const DIST_WEB = fileURLToPath(new URL('../../dist-web/', import.meta.url));

/**
 * Bytes (brotli quality 11) of what the page always loads: run.js and the zstd decoder's
 * WebAssembly (v86 itself is counted apart, it is pinned upstream code). Measured 2026-11-30:
 * 115,798 (run.js 99,470 = xterm.js 74,615 + zod/mini ~8,700 + hostme ~16,200; zstd.wasm 16,328).
 * Before the core merge the page was 108,647: reaching that again needs a smaller zstd decoder.
 * The tab as a WebRTC peer (page-swarm.ts + the shared rtc/channel-peer/wire code) added 4,279:
 * 120,077 after the merge of 2026-11-30.
 */
export const RUN_PAGE_BUDGET = 120_500;

const brotliSize = (bytes: Uint8Array) => brotliCompressSync(bytes, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }).length;

test('the run page (run.js + zstd.wasm, brotli) stays within its byte budget', async () => {
  const sizes: Record<string, number> = {};
  for (const file of ['run.js', 'zstd.wasm']) {
    // No bundle is a failure (scripts/build-web.sh is part of the build), never a skip.
    sizes[file] = brotliSize(await readFile(DIST_WEB + file));
  }
  const total = Object.values(sizes).reduce((a, b) => a + b, 0);
  assert.ok(total <= RUN_PAGE_BUDGET, `the run page is ${total} bytes brotli (${JSON.stringify(sizes)}), over its budget of ${RUN_PAGE_BUDGET}: see scripts/build-web.sh for measuring with esbuild's metafile`);
});
