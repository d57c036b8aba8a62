#!/usr/bin/env bash
# Bundles the run page script (src/web/run.ts + the browser reader + xterm.js)
# into dist-web/run.js with esbuild. v86 itself is not bundled: the page loads
# the pinned node_modules/v86 build from /_hostme/libv86.mjs at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist-web
npx --no-install esbuild src/web/run.ts --bundle --format=esm --target=es2022 --platform=browser \
  --minify --sourcemap --legal-comments=linked --log-level=warning --outfile=dist-web/run.js
