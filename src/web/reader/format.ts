// Browser-side implementation of docs/format.md: envelope verification,
// manifest validation, chunk index parsing and object decoding.
// Browser-only (WebCrypto, zstddec): no node: imports.
import { ZSTDDecoder } from 'zstddec';

export type ReaderErrorCode =
  | 'network'
  | 'not-found'
  | 'unsupported'
  | 'corrupt'
  | 'unsigned'
  | 'tampered'
  | 'key-mismatch'
  | 'invalid-object'
  | 'quota';

export class ReaderError extends Error {
  constructor(
    readonly code: ReaderErrorCode,
    message: string,
    readonly detail: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'ReaderError';
  }
}

const ID_RE = /^[0-9a-f]{64}$/;
const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const VERSION_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/;
const DISK_NAME_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/;
export const MIN_CHUNK_SIZE = 65536;
export const MAX_CHUNK_SIZE = 4194304;
export const ENVELOPE_PREFIX = 'hostme-envelope-v1\n';
export const MANIFEST_PAYLOAD_TYPE = 'application/vnd.hostme.manifest+json';

export interface BlobRef {
  size: number;
  chunkSize: number;
  index: string;
}
export interface DiskRef extends BlobRef {
  name: string;
  storedBytes?: number;
}
export interface Manifest {
  formatVersion: 1;
  kind: 'hostme-image';
  name: string;
  version: string;
  created: string;
  description?: string;
  hardware: { arch: 'x86_64' | 'i686'; memoryMiB: number; cpus: number };
  boot: { mode: 'direct'; kernel: BlobRef; initrd?: BlobRef; cmdline: string } | { mode: 'firmware' };
  disks: DiskRef[];
  memorySnapshot?: BlobRef & { emulator: string; memoryBytes?: number; vgaMemoryBytes?: number };
  prefetch?: Array<[number, number]>;
  mirrors: string[];
  parent?: { version: string; digest: string };
  /** The overlay network the image joins by default (docs/net.md). */
  network?: { join: string };
}

// ------------------------------------------------------------------ bytes

export function toHex(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

export function fromBase64(text: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) throw new Error('not base64');
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function toBase64(bytes: Uint8Array): string {
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

/** A plain ArrayBuffer-backed copy/view WebCrypto accepts under strict DOM typings. */
function bufferSource(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return bytes.buffer instanceof ArrayBuffer ? (bytes as Uint8Array<ArrayBuffer>) : new Uint8Array(bytes);
}

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  return toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', bufferSource(bytes))));
}

// ------------------------------------------------------------------ objects

export function objectPath(id: string): string {
  return `objects/${id.slice(0, 2)}/${id}`;
}

/**
 * Decodes a stored object of known uncompressed length (docs/format.md §2):
 * stored length == L means raw; shorter means one zstd frame; longer is invalid.
 * Verifies SHA-256(content) == id. Throws ReaderError('invalid-object').
 */
export async function decodeObject(stored: Uint8Array, id: string, length: number, origin: string): Promise<Uint8Array> {
  let content: Uint8Array;
  if (stored.length === length) {
    content = stored;
  } else if (stored.length > length) {
    throw new ReaderError('invalid-object', `${origin}: object ${id} is ${stored.length} bytes, longer than its content (${length})`, { id, origin });
  } else {
    // zstddec decodes into a buffer of exactly `length` bytes (the index's
    // figure), so a frame holding more fails instead of growing the heap; a
    // header that declares another size is refused before any decoding.
    const declared = zstdDeclaredSize(stored);
    if (declared !== undefined && declared !== length) {
      throw new ReaderError('invalid-object', `${origin}: object ${id} declares ${declared} bytes of content, expected ${length}`, { id, origin });
    }
    try {
      content = (await zstd()).decode(stored, length);
    } catch (err) {
      throw new ReaderError('invalid-object', `${origin}: object ${id} is not a valid zstd frame (${(err as Error).message})`, { id, origin });
    }
    if (content.length !== length) {
      throw new ReaderError('invalid-object', `${origin}: object ${id} decompressed to ${content.length} bytes, expected ${length}`, { id, origin });
    }
  }
  const actual = await sha256Hex(content);
  if (actual !== id) {
    throw new ReaderError('invalid-object', `${origin}: object ${id} has the wrong content (SHA-256 ${actual})`, { id, origin, actual });
  }
  return content;
}

/** Frame_Content_Size from a zstd frame header (RFC 8878 §3.1.1.1), undefined when absent or not a frame. */
export function zstdDeclaredSize(frame: Uint8Array): number | undefined {
  if (frame.length < 6 || frame[0] !== 0x28 || frame[1] !== 0xb5 || frame[2] !== 0x2f || frame[3] !== 0xfd) return undefined;
  const descriptor = frame[4]!;
  const singleSegment = (descriptor >> 5) & 1;
  const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][descriptor >> 6]!;
  if (fcsBytes === 0) return undefined;
  const at = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][descriptor & 3]!;
  if (frame.length < at + fcsBytes) return undefined;
  let value = 0;
  for (let i = fcsBytes - 1; i >= 0; i--) value = value * 256 + frame[at + i]!;
  return fcsBytes === 2 ? value + 256 : value;
}

// zstd in WebAssembly (zstddec, the reference decoder compiled to wasm): about
// 3x faster than the pure-JS fzstd on the memory snapshot's chunks (docs/web.md).
let decoder: Promise<ZSTDDecoder> | undefined;
function zstd(): Promise<ZSTDDecoder> {
  decoder ??= (async () => {
    const d = new ZSTDDecoder();
    await d.init();
    return d;
  })();
  return decoder;
}

// ------------------------------------------------------------------ chunk index

export interface ChunkIndex {
  size: number;
  chunkSize: number;
  count: number;
  /** Chunk ids; null for a hole (all-zero chunk, no object). */
  ids: Array<string | null>;
}

export function chunkIndexLength(ref: BlobRef): number {
  return 32 + 32 * Math.ceil(ref.size / ref.chunkSize);
}

export function parseChunkIndex(bytes: Uint8Array, ref: BlobRef, origin: string): ChunkIndex {
  const bad = (why: string): never => {
    throw new ReaderError('corrupt', `${origin}: invalid chunk index: ${why}`, { origin });
  };
  if (bytes.length < 32) bad('too short');
  const magic = new TextDecoder().decode(bytes.subarray(0, 8));
  if (magic !== 'HOSTMEIX') bad('bad magic');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== 1) {
    throw new ReaderError('unsupported', `${origin}: chunk index version ${version} is not supported (this reader knows version 1): a newer hostme is needed`, { origin, version });
  }
  const chunkSize = view.getUint32(12, true);
  const size = Number(view.getBigUint64(16, true));
  const count = Number(view.getBigUint64(24, true));
  if (chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE || (chunkSize & (chunkSize - 1)) !== 0) bad(`chunk size ${chunkSize}`);
  if (chunkSize !== ref.chunkSize || size !== ref.size) bad('size or chunk size differ from the manifest');
  if (count !== Math.ceil(size / chunkSize)) bad('chunk count does not match the size');
  if (bytes.length !== 32 + 32 * count) bad('length does not match the chunk count');
  const ids: Array<string | null> = new Array<string | null>(count);
  for (let i = 0; i < count; i++) {
    const raw = bytes.subarray(32 + 32 * i, 64 + 32 * i);
    ids[i] = raw.every((b) => b === 0) ? null : toHex(raw);
  }
  return { size, chunkSize, count, ids };
}

// ------------------------------------------------------------------ envelope

export interface VerifiedEnvelope {
  manifest: Manifest;
  /** Hex SHA-256 of the envelope file bytes (the manifest digest). */
  digest: string;
  keyId: string;
  publicKey: string;
}

interface RawSignature {
  keyId: string;
  publicKey: string;
  sig: string;
}

/**
 * Verifies a signed envelope (docs/format.md §5) with WebCrypto Ed25519 and
 * returns the parsed manifest. `trusted` restricts the accepted keys (base64
 * public keys); empty means "any valid signature" (trust on first use is the
 * caller's business).
 */
export async function verifyEnvelope(bytes: Uint8Array, trusted: string[], origin: string): Promise<VerifiedEnvelope> {
  let env: unknown;
  try {
    env = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new ReaderError('corrupt', `${origin}: the envelope is not valid JSON (corrupt or truncated)`, { origin });
  }
  const e = env as Record<string, unknown> | null;
  if (!e || typeof e !== 'object') throw new ReaderError('corrupt', `${origin}: the envelope is not a JSON object`, { origin });
  if (e.hostmeEnvelope !== 1) {
    throw new ReaderError('unsupported', `${origin}: envelope version ${String(e.hostmeEnvelope)} is not supported (this reader knows version 1)`, { origin });
  }
  if (typeof e.payloadType !== 'string' || typeof e.payload !== 'string' || !Array.isArray(e.signatures)) {
    throw new ReaderError('corrupt', `${origin}: the envelope does not have the expected shape`, { origin });
  }
  if (e.signatures.length === 0) throw new ReaderError('unsigned', `${origin}: the manifest is not signed`, { origin });
  let payload: Uint8Array;
  try {
    payload = fromBase64(e.payload);
  } catch {
    throw new ReaderError('corrupt', `${origin}: the envelope payload is not base64`, { origin });
  }
  const prefix = new TextEncoder().encode(`${ENVELOPE_PREFIX}${e.payloadType}\n`);
  const signed = new Uint8Array(prefix.length + payload.length);
  signed.set(prefix);
  signed.set(payload, prefix.length);

  let considered = 0;
  let verified: RawSignature | undefined;
  for (const s of e.signatures as unknown[]) {
    const sig = s as Partial<RawSignature> | null;
    if (!sig || typeof sig.keyId !== 'string' || typeof sig.publicKey !== 'string' || typeof sig.sig !== 'string') {
      throw new ReaderError('corrupt', `${origin}: a signature entry does not have the expected shape`, { origin });
    }
    let pub: Uint8Array;
    let sigBytes: Uint8Array;
    try {
      pub = fromBase64(sig.publicKey);
      sigBytes = fromBase64(sig.sig);
    } catch {
      throw new ReaderError('corrupt', `${origin}: a signature entry is not base64`, { origin });
    }
    if (pub.length !== 32 || sigBytes.length !== 64) throw new ReaderError('corrupt', `${origin}: bad key or signature length`, { origin });
    if ((await sha256Hex(pub)) !== sig.keyId) throw new ReaderError('tampered', `${origin}: keyId does not match the public key`, { origin });
    if (trusted.length > 0 && !trusted.includes(sig.publicKey)) continue;
    considered++;
    const key = await crypto.subtle.importKey('raw', bufferSource(pub), { name: 'Ed25519' }, false, ['verify']);
    const ok = await crypto.subtle.verify({ name: 'Ed25519' }, key, bufferSource(sigBytes), bufferSource(signed));
    if (!ok) throw new ReaderError('tampered', `${origin}: the signature does not verify: the manifest was modified`, { origin, keyId: sig.keyId });
    verified = sig as RawSignature;
    break;
  }
  if (!verified || considered === 0) {
    throw new ReaderError('key-mismatch', `${origin}: signed by a key this page does not trust (the repository's key changed?)`, { origin });
  }
  if (e.payloadType !== MANIFEST_PAYLOAD_TYPE) {
    throw new ReaderError('unsupported', `${origin}: payload type ${e.payloadType} is not a hostme manifest`, { origin });
  }
  const manifest = parseManifest(payload, origin);
  return { manifest, digest: await sha256Hex(bytes), keyId: verified.keyId, publicKey: verified.publicKey };
}

// ------------------------------------------------------------------ manifest

/** Parses and validates manifest bytes (docs/format.md §4); refuses formatVersion ≠ 1 first. */
export function parseManifest(bytes: Uint8Array, origin: string): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new ReaderError('corrupt', `${origin}: the manifest is not valid JSON`, { origin });
  }
  const m = raw as Record<string, unknown> | null;
  if (!m || typeof m !== 'object' || Array.isArray(m)) throw new ReaderError('corrupt', `${origin}: the manifest is not a JSON object`, { origin });
  if (m.formatVersion !== 1) {
    throw new ReaderError(
      'unsupported',
      `${origin}: manifest format version ${String(m.formatVersion)} is not supported (this page reads version 1): a newer hostme is needed`,
      { origin, version: m.formatVersion },
    );
  }
  const fail = (path: string, why: string): never => {
    throw new ReaderError('corrupt', `${origin}: invalid manifest at ${path}: ${why}`, { origin, path });
  };
  const obj = (v: unknown, path: string): Record<string, unknown> => {
    if (!v || typeof v !== 'object' || Array.isArray(v)) fail(path, 'must be an object');
    return v as Record<string, unknown>;
  };
  const int = (v: unknown, path: string, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) fail(path, `must be an integer in [${min}, ${max}]`);
    return v as number;
  };
  const str = (v: unknown, path: string, re?: RegExp, max = 4096): string => {
    if (typeof v !== 'string' || v.length > max || (re && !re.test(v))) fail(path, re ? `must match ${String(re)}` : 'must be a string');
    return v as string;
  };
  const blob = (v: unknown, path: string): BlobRef => {
    const b = obj(v, path);
    const chunkSize = int(b.chunkSize, `${path}.chunkSize`, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE);
    if ((chunkSize & (chunkSize - 1)) !== 0) fail(`${path}.chunkSize`, 'must be a power of two');
    return { size: int(b.size, `${path}.size`, 0), chunkSize, index: str(b.index, `${path}.index`, ID_RE) };
  };

  if (m.kind !== 'hostme-image') fail('kind', 'must be "hostme-image"');
  const name = str(m.name, 'name', NAME_RE);
  const version = str(m.version, 'version', VERSION_RE);
  const created = str(m.created, 'created');
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(created)) fail('created', 'must be an RFC 3339 timestamp');
  const description = m.description === undefined ? undefined : str(m.description, 'description');
  const hw = obj(m.hardware, 'hardware');
  if (hw.arch !== 'x86_64' && hw.arch !== 'i686') fail('hardware.arch', 'must be "x86_64" or "i686"');
  const hardware = {
    arch: hw.arch as 'x86_64' | 'i686',
    memoryMiB: int(hw.memoryMiB, 'hardware.memoryMiB', 16, 1 << 20),
    cpus: int(hw.cpus, 'hardware.cpus', 1, 256),
  };
  const b = obj(m.boot, 'boot');
  let boot: Manifest['boot'];
  if (b.mode === 'direct') {
    boot = {
      mode: 'direct',
      kernel: blob(b.kernel, 'boot.kernel'),
      ...(b.initrd === undefined ? {} : { initrd: blob(b.initrd, 'boot.initrd') }),
      cmdline: str(b.cmdline, 'boot.cmdline'),
    };
  } else if (b.mode === 'firmware') {
    boot = { mode: 'firmware' };
  } else {
    return fail('boot.mode', 'must be "direct" or "firmware"');
  }
  if (!Array.isArray(m.disks) || m.disks.length < 1 || m.disks.length > 16) fail('disks', 'must list 1 to 16 disks');
  const disks = (m.disks as unknown[]).map((d, i): DiskRef => {
    const dd = obj(d, `disks.${i}`);
    return {
      ...blob(dd, `disks.${i}`),
      name: str(dd.name, `disks.${i}.name`, DISK_NAME_RE),
      ...(dd.storedBytes === undefined ? {} : { storedBytes: int(dd.storedBytes, `disks.${i}.storedBytes`, 0) }),
    };
  });
  let memorySnapshot: Manifest['memorySnapshot'];
  if (m.memorySnapshot !== undefined) {
    const s = obj(m.memorySnapshot, 'memorySnapshot');
    memorySnapshot = {
      ...blob(s, 'memorySnapshot'),
      emulator: str(s.emulator, 'memorySnapshot.emulator'),
      ...(s.memoryBytes === undefined ? {} : { memoryBytes: int(s.memoryBytes, 'memorySnapshot.memoryBytes', 1) }),
      ...(s.vgaMemoryBytes === undefined ? {} : { vgaMemoryBytes: int(s.vgaMemoryBytes, 'memorySnapshot.vgaMemoryBytes', 0) }),
    };
  }
  let prefetch: Manifest['prefetch'];
  if (m.prefetch !== undefined) {
    if (!Array.isArray(m.prefetch) || m.prefetch.length > 1 << 20) fail('prefetch', 'must be an array');
    prefetch = (m.prefetch as unknown[]).map((p, i): [number, number] => {
      if (!Array.isArray(p) || p.length !== 2) fail(`prefetch.${i}`, 'must be [disk, chunk]');
      const pair = p as unknown[];
      const disk = int(pair[0], `prefetch.${i}.0`, 0);
      const chunk = int(pair[1], `prefetch.${i}.1`, 0);
      const ref = disks[disk];
      if (!ref || chunk * ref.chunkSize >= ref.size) fail(`prefetch.${i}`, `entry [${disk}, ${chunk}] points past the disks`);
      return [disk, chunk];
    });
  }
  let mirrors: string[] = [];
  if (m.mirrors !== undefined) {
    if (!Array.isArray(m.mirrors)) fail('mirrors', 'must be an array of URLs');
    mirrors = (m.mirrors as unknown[]).map((u, i) => {
      const s = str(u, `mirrors.${i}`);
      try {
        new URL(s);
      } catch {
        fail(`mirrors.${i}`, 'must be a URL');
      }
      return s;
    });
  }
  let parent: Manifest['parent'];
  if (m.parent !== undefined) {
    const p = obj(m.parent, 'parent');
    parent = { version: str(p.version, 'parent.version'), digest: str(p.digest, 'parent.digest', ID_RE) };
  }
  let network: Manifest['network'];
  if (m.network !== undefined) network = { join: str(obj(m.network, 'network').join, 'network.join', /^[a-z0-9][a-z0-9-]{0,31}$/) };
  return {
    formatVersion: 1,
    kind: 'hostme-image',
    name,
    version,
    created,
    ...(description === undefined ? {} : { description }),
    hardware,
    boot,
    disks,
    ...(memorySnapshot ? { memorySnapshot } : {}),
    ...(prefetch ? { prefetch } : {}),
    mirrors,
    ...(parent ? { parent } : {}),
    ...(network ? { network } : {}),
  };
}
