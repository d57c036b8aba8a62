// The browser image reader: resolves an image in a repository over HTTP(S),
// verifies its signed manifest, and reads verified chunks on demand, from the
// persistent browser cache or from the repository and its mirrors.
// Browser-only: fetch, WebCrypto, Cache API, localStorage.
import type { ObjectCache } from './cache.js';
import {
  chunkIndexLength,
  decodeObject,
  objectPath,
  parseChunkIndex,
  ReaderError,
  verifyEnvelope,
  type BlobRef,
  type ChunkIndex,
  type Manifest,
} from './format.js';

export interface ReaderStats {
  /** Objects and bytes (as stored, i.e. compressed) fetched over the network. */
  fetchedObjects: number;
  fetchedBytes: number;
  /** Objects and bytes served from the persistent browser cache. */
  cachedObjects: number;
  cachedBytes: number;
}

export type ReaderEvent =
  | { type: 'progress'; stats: ReaderStats }
  | { type: 'invalid-object'; id: string; label: string; source: string; message: string }
  | { type: 'retrying'; url: string; attempt: number; message: string };

/** Where trust-on-first-use pins live (localStorage in pages; a Map in tests). */
export interface PinStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export interface OpenImageOptions {
  /** Repository base URL (with or without a trailing slash). */
  repoUrl: string;
  name: string;
  /** Default: the listing's latest. */
  version?: string;
  /** Base64 Ed25519 public key the page requires; otherwise trust on first use via `pins`. */
  publicKey?: string;
  pins?: PinStore | null;
  cache: ObjectCache;
  onEvent?: (event: ReaderEvent) => void;
  /** Network retries per source before failing over (default 2). */
  retries?: number;
  fetch?: typeof fetch;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const withSlash = (u: string): string => (u.endsWith('/') ? u : `${u}/`);

function pinKey(repoUrl: string): string {
  return `hostme-trust:${withSlash(repoUrl)}`;
}

export class ImageReader {
  readonly stats: ReaderStats = { fetchedObjects: 0, fetchedBytes: 0, cachedObjects: 0, cachedBytes: 0 };
  /** Sources in preference order: the repository, then the manifest's mirrors; invalid ones move last. */
  readonly sources: string[];
  private readonly inflight = new Map<string, Promise<Uint8Array>>();
  private readonly indexes = new Map<string, Promise<ChunkIndex>>();
  private readonly fetchImpl: typeof fetch;

  private constructor(
    readonly manifest: Manifest,
    readonly digest: string,
    readonly keyId: string,
    private readonly options: OpenImageOptions,
  ) {
    this.sources = [withSlash(options.repoUrl), ...manifest.mirrors.map(withSlash).filter((m) => m !== withSlash(options.repoUrl))];
    this.fetchImpl = options.fetch ?? fetch.bind(globalThis);
  }

  /** Fetches the listing and the manifest, verifies the signature and the trust pin. */
  static async open(options: OpenImageOptions): Promise<ImageReader> {
    const base = withSlash(options.repoUrl);
    const doFetch = options.fetch ?? fetch.bind(globalThis);
    const getBytes = async (path: string): Promise<Uint8Array> => {
      let res: Response;
      try {
        res = await doFetch(base + path, { cache: 'no-cache', credentials: 'omit' });
      } catch (err) {
        throw new ReaderError('network', `cannot reach ${base + path}: ${(err as Error).message}`, { url: base + path });
      }
      if (res.status === 404) throw new ReaderError('not-found', `${base + path} does not exist`, { url: base + path });
      if (!res.ok) throw new ReaderError('network', `${base + path}: HTTP ${res.status}`, { url: base + path });
      return new Uint8Array(await res.arrayBuffer());
    };
    let version = options.version;
    if (!version) {
      const listing = JSON.parse(new TextDecoder().decode(await getBytes('index.json'))) as {
        images?: Record<string, { latest?: string }>;
      };
      version = listing.images?.[options.name]?.latest;
      if (!version) throw new ReaderError('not-found', `the repository has no image named "${options.name}"`, { name: options.name });
    }
    const origin = `manifests/${options.name}/${version}.json`;
    const envelopeBytes = await getBytes(origin);
    const pinned = options.publicKey ?? options.pins?.getItem(pinKey(base)) ?? undefined;
    const verified = await verifyEnvelope(envelopeBytes, pinned ? [pinned] : [], origin);
    if (verified.manifest.name !== options.name || verified.manifest.version !== version) {
      throw new ReaderError('corrupt', `${origin}: the manifest names ${verified.manifest.name} ${verified.manifest.version}`, { origin });
    }
    if (!options.publicKey && !pinned) {
      try {
        options.pins?.setItem(pinKey(base), verified.publicKey);
      } catch {
        // Storage disabled: trust stays per page load.
      }
    }
    return new ImageReader(verified.manifest, verified.digest, verified.keyId, options);
  }

  private emit(event: ReaderEvent): void {
    this.options.onEvent?.(event);
  }

  /**
   * One verified object's content, from the cache or the first source that has valid bytes.
   * `priority` is the fetch priority hint ('low' for prefetch, so the browser's
   * connection queue serves demand reads first); a read that joins an object
   * already in flight shares that fetch.
   */
  readObject(id: string, length: number, label: string, priority?: RequestPriority): Promise<Uint8Array> {
    let p = this.inflight.get(id);
    if (!p) {
      p = this.loadObject(id, length, label, priority).finally(() => this.inflight.delete(id));
      this.inflight.set(id, p);
    }
    return p;
  }

  private async loadObject(id: string, length: number, label: string, priority: RequestPriority | undefined): Promise<Uint8Array> {
    const cached = await this.options.cache.get(id);
    if (cached) {
      try {
        const content = await decodeObject(cached, id, length, 'browser cache');
        this.stats.cachedObjects++;
        this.stats.cachedBytes += cached.length;
        this.emit({ type: 'progress', stats: { ...this.stats } });
        return content;
      } catch {
        await this.options.cache.delete(id);
      }
    }
    let lastError: ReaderError | undefined;
    for (const source of [...this.sources]) {
      const url = source + objectPath(id);
      let stored: Uint8Array | undefined;
      try {
        stored = await this.fetchWithRetry(url, priority);
      } catch (err) {
        lastError = err instanceof ReaderError ? err : new ReaderError('network', String(err));
        continue;
      }
      if (!stored) {
        lastError ??= new ReaderError('not-found', `${label}: object ${id} is missing from every source`, { id });
        continue;
      }
      this.stats.fetchedObjects++;
      this.stats.fetchedBytes += stored.length;
      this.emit({ type: 'progress', stats: { ...this.stats } });
      let content: Uint8Array;
      try {
        content = await decodeObject(stored, id, length, source);
      } catch (err) {
        const message = `${label}: wrong bytes from ${source} for object ${id} (${(err as Error).message})`;
        this.emit({ type: 'invalid-object', id, label, source, message });
        lastError = new ReaderError('invalid-object', message, { id, label, source });
        // Demote this source: it served bad bytes.
        const at = this.sources.indexOf(source);
        if (at >= 0 && this.sources.length > 1) this.sources.push(...this.sources.splice(at, 1));
        continue;
      }
      // Persisting is off the read path: the guest waits for the bytes, not for the disk write.
      this.persist(id, stored);
      return content;
    }
    throw lastError ?? new ReaderError('network', `${label}: no source for object ${id}`, { id });
  }

  private readonly writes = new Set<Promise<void>>();
  private writeHold: Promise<unknown> = Promise.resolve();

  /**
   * Keep persistent-cache writes queued until `until` settles. Cache API puts
   * cost main-thread time (measured: 0.6 s for the 9 MiB of a memory
   * snapshot) that the start of the machine needs more.
   */
  holdWrites(until: Promise<unknown>): void {
    this.writeHold = until.catch(() => {});
  }

  private persist(id: string, stored: Uint8Array): void {
    const write = this.writeHold.then(() => this.options.cache.put(id, stored)).catch(() => {});
    this.writes.add(write);
    void write.finally(() => this.writes.delete(write));
  }

  /** Resolves when every fetched object has been handed to the persistent cache. */
  async flushCache(): Promise<void> {
    while (this.writes.size > 0) await Promise.all([...this.writes]);
  }

  /** GET with retries on network errors and 5xx; undefined on 404. */
  private async fetchWithRetry(url: string, priority: RequestPriority | undefined): Promise<Uint8Array | undefined> {
    const retries = this.options.retries ?? 2;
    for (let attempt = 0; ; attempt++) {
      let message: string;
      try {
        const res = await this.fetchImpl(url, { credentials: 'omit', ...(priority ? { priority } : {}) });
        if (res.status === 404) return undefined;
        if (res.ok) return new Uint8Array(await res.arrayBuffer());
        message = `HTTP ${res.status}`;
        if (res.status < 500) throw new ReaderError('network', `${url}: ${message}`, { url });
      } catch (err) {
        if (err instanceof ReaderError) throw err;
        message = (err as Error).message;
      }
      if (attempt >= retries) throw new ReaderError('network', `cannot fetch ${url}: ${message}`, { url });
      this.emit({ type: 'retrying', url, attempt: attempt + 1, message });
      await sleep(300 * 2 ** attempt);
    }
  }

  /** The parsed chunk index of a blob (fetched once). */
  chunkIndex(ref: BlobRef, label: string): Promise<ChunkIndex> {
    let p = this.indexes.get(ref.index);
    if (!p) {
      p = this.readObject(ref.index, chunkIndexLength(ref), `${label} index`).then((bytes) => parseChunkIndex(bytes, ref, `${label} index`));
      p.catch(() => this.indexes.delete(ref.index));
      this.indexes.set(ref.index, p);
    }
    return p;
  }

  /** Whether chunk `i` of a blob is a hole (all zeros, no object to fetch). */
  async isHole(ref: BlobRef, i: number, label: string): Promise<boolean> {
    const index = await this.chunkIndex(ref, label);
    return i >= 0 && i < index.count && !index.ids[i];
  }

  /** Chunk `i` of a blob: verified content, zeros for a hole. */
  async readChunk(ref: BlobRef, i: number, label: string, priority?: RequestPriority): Promise<Uint8Array> {
    const index = await this.chunkIndex(ref, label);
    if (i < 0 || i >= index.count) throw new RangeError(`${label}: chunk ${i} is outside the blob (${index.count} chunks)`);
    const length = Math.min(ref.chunkSize, ref.size - i * ref.chunkSize);
    const id = index.ids[i];
    if (!id) return new Uint8Array(length);
    return this.readObject(id, length, `${label} chunk ${i}`, priority);
  }

  /** A whole blob (kernel, initrd, snapshot), chunks fetched in parallel. */
  async readBlob(ref: BlobRef, label: string, parallel = 6, onChunk?: (bytes: number) => void): Promise<Uint8Array> {
    const index = await this.chunkIndex(ref, label);
    const out = new Uint8Array(ref.size);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < index.count) {
        const i = next++;
        const chunk = await this.readChunk(ref, i, label);
        out.set(chunk, i * ref.chunkSize);
        onChunk?.(chunk.length);
      }
    };
    await Promise.all(Array.from({ length: Math.min(parallel, index.count) }, worker));
    return out;
  }
}
