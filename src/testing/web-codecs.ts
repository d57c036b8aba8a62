// The page's codecs under Node: the zstd decoder is v86's WebAssembly from
// node_modules/v86 (the same file hostme serve sends the page as /_hostme/v86.wasm).
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { useZstdModule, webCodecs } from '../web/reader/codecs.js';

const V86_WASM = path.join(path.dirname(createRequire(import.meta.url).resolve('v86')), 'v86.wasm');

useZstdModule(async () => WebAssembly.compile(await readFile(V86_WASM)));

export { webCodecs };
