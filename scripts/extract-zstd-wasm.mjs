// Writes the zstd decoder WebAssembly that the pinned zstddec package inlines
// as base64 to the file named on the command line (see scripts/build-web.sh).
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(import.meta.resolve('zstddec'));
const found = readFileSync(dist, 'utf8').match(/"([A-Za-z0-9+/=]{10000,})"/);
if (!found) {
  console.error(`extract-zstd-wasm: no inline WebAssembly found in ${dist} (zstddec changed its layout)`);
  process.exit(1);
}
const wasm = Buffer.from(found[1], 'base64');
const module = new WebAssembly.Module(wasm); // refuses anything that is not WebAssembly
const names = WebAssembly.Module.exports(module).map((e) => e.name);
for (const need of ['memory', 'malloc', 'free', 'ZSTD_decompress', 'ZSTD_isError']) {
  if (!names.includes(need)) {
    console.error(`extract-zstd-wasm: the decoder does not export ${need}`);
    process.exit(1);
  }
}
writeFileSync(process.argv[2], wasm);
