#!/usr/bin/env bash
# Bundles the run page script (src/web/run.ts + the browser reader + xterm.js)
# and the landing page's protocol handler button (src/web/handler.ts)
# into dist-web/run.js and dist-web/handler.js with esbuild. v86 itself is not bundled: the page loads
# the pinned node_modules/v86 build from /_hostme/libv86.mjs at run time.
# Where the page's bytes go: add --metafile=/tmp/meta.json and read its outputs[...].inputs
# (bytesInOutput per module); src/web/page-size.test.ts holds the budget (brotli, run.js; the zstd
# decoder is v86's own WebAssembly, src/web/reader/codecs.ts).
# --charset=utf8: module scripts are always decoded as UTF-8, so text needs no \u escapes.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist-web
npx --no-install esbuild src/web/run.ts src/web/handler.ts src/web/node-console.ts --bundle --format=esm --target=es2022 --platform=browser \
  --minify --charset=utf8 --sourcemap --legal-comments=linked --log-level=warning --outdir=dist-web
