// The page's codecs under Node: the zstd WebAssembly comes from the file
// scripts/build-web.sh writes (the page fetches the same file from hostme serve).
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { HostmeError } from '../errors.js';
import { useZstdWasm, webCodecs } from '../web/reader/codecs.js';

const WASM = fileURLToPath(new URL('../../dist-web/zstd.wasm', import.meta.url));

useZstdWasm(async () => {
  const bytes = await readFile(WASM).catch((err: NodeJS.ErrnoException) => {
    throw new HostmeError('asset-missing', `${WASM}: ${err.code} (run scripts/build-web.sh)`, { file: WASM });
  });
  return new Uint8Array(bytes);
});

export { webCodecs };
