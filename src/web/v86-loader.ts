import { HostmeError } from '../errors.js';
// Loads everything v86 needs from the hostme server (module, WebAssembly,
// SeaBIOS), in parallel with the image's boot blobs: v86 on its own would
// fetch and compile them one after the other only once it is constructed.

export interface V86Emulator {
  add_listener(event: string, fn: (value: unknown) => void): void;
  /** Turns the browser keyboard adapter on or off (constructed with disable_keyboard: false). */
  keyboard_set_enabled(enabled: boolean): void;
  serial0_send(text: string): void;
  run(): Promise<void>;
  stop(): Promise<void>;
  destroy(): Promise<void>;
  is_running(): boolean;
}
export type V86Constructor = new (options: Record<string, unknown>) => V86Emulator;

export interface LoadedV86 {
  V86: V86Constructor;
  /** Options that hand v86 the preloaded parts. */
  options: Record<string, unknown>;
}

const ASSETS = '/_hostme/';

async function fetchBytes(name: string): Promise<ArrayBuffer> {
  const res = await fetch(ASSETS + name, { credentials: 'omit' });
  if (!res.ok) throw new HostmeError('emulator-missing', `${ASSETS + name}: HTTP ${res.status} (the server is missing an emulator file)`, { file: name, status: res.status });
  return res.arrayBuffer();
}

async function compileWasm(): Promise<WebAssembly.Module> {
  if (typeof WebAssembly.compileStreaming === 'function') {
    return WebAssembly.compileStreaming(fetch(ASSETS + 'v86.wasm', { credentials: 'omit' }));
  }
  return WebAssembly.compile(await fetchBytes('v86.wasm'));
}

let compiled: Promise<WebAssembly.Module> | undefined;

/**
 * v86's WebAssembly, downloaded and compiled once per page: the emulator and
 * the page's zstd decoder (reader/codecs.ts) instantiate the same module. The
 * page starts it first thing, as the snapshot's chunks need the decoder
 * before the emulator is constructed. A failure is retried by the next caller.
 */
export function v86Module(): Promise<WebAssembly.Module> {
  compiled ??= compileWasm();
  compiled.catch(() => (compiled = undefined));
  return compiled;
}

export async function loadV86(): Promise<LoadedV86> {
  const moduleUrl = ASSETS + 'libv86.mjs';
  const [mod, wasm, bios, vgaBios] = await Promise.all([
    import(/* webpackIgnore: true */ moduleUrl) as Promise<{ V86: V86Constructor }>,
    v86Module(),
    fetchBytes('bios.bin'),
    fetchBytes('vgabios.bin'),
  ]);
  return {
    V86: mod.V86,
    options: {
      // v86 calls this with its import object instead of fetching and compiling v86.wasm itself.
      wasm_fn: async (imports: WebAssembly.Imports) => (await WebAssembly.instantiate(wasm, imports)).exports,
      bios: { buffer: bios },
      vga_bios: { buffer: vgaBios },
    },
  };
}
