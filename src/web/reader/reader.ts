// The browser image reader: the core's combinators (HTTP transport over
// fetch → MirrorGroup → CacheStore over the Cache API → FetchScheduler →
// ChunkedImageDevice → in-memory CowOverlay), assembled for a page. Only the
// page-specific parts live here: trust-on-first-use pins in localStorage, the
// statistics and events the page shows, and which codecs to use.
import { HostmeError } from '../../errors.js';
import { openEnvelope } from '../../format/envelope.js';
import { fromBase64, toBase64 } from '../../format/digest.js';
import { manifestBlobs, parseManifest, type BlobRef, type Manifest } from '../../format/manifest.js';
import { chunkLength, indexByteLength, isHole, type ChunkIndex } from '../../format/chunk-index.js';
import { onEvent, type HostmeEventName, type HostmeEvents } from '../../store/events.js';
import { HttpTransport } from '../../store/http-transport.js';
import { TransportStore } from '../../store/transport-store.js';
import { MirrorGroup, type PeerSourceOptions } from '../../store/mirror-group.js';
import { CacheStore } from '../../store/cache-store.js';
import { FetchScheduler } from '../../store/fetch-scheduler.js';
import type { GetOptions, ObjectRef, ObjectSource, VerifiedObject } from '../../store/object-store.js';
import { memoryOverlay, openImageDisks, readWholeBlob, type ImageDisk } from '../../device/image-disks.js';
import type { BrowserCacheStore } from './cache.js';
import { webCodecs } from './codecs.js';

export interface ReaderStats {
  /** Objects and bytes (as stored, i.e. compressed) fetched over the network. */
  fetchedObjects: number;
  fetchedBytes: number;
  /** Objects and bytes served from the persistent browser cache. */
  cachedObjects: number;
  cachedBytes: number;
  /** Of the fetched ones, those that came from peers (other tabs, Node peers) rather than the repository or its mirrors. */
  peerObjects?: number;
  peerBytes?: number;
}

export type ReaderEvent =
  | { type: 'progress'; stats: ReaderStats }
  | { type: 'invalid-object'; id: string; label: string; source: string; message: string }
  | { type: 'retrying'; url: string; attempt: number; message: string }
  | { type: 'cache-degraded'; message: string };

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
  /** The persistent object store; without one every object comes from the network. */
  cache?: BrowserCacheStore;
  onEvent?: (event: ReaderEvent) => void;
  /** Network retries per source before failing over (default 2). */
  retries?: number;
  fetch?: typeof fetch;
  /** Read from the repository only, not the manifest's mirrors. */
  ignoreMirrors?: boolean;
}

const withSlash = (u: string): string => (u.endsWith('/') ? u : `${u}/`);
const pinKey = (repoUrl: string): string => `hostme-trust:${withSlash(repoUrl)}`;

export class ImageReader {
  readonly stats: ReaderStats = { fetchedObjects: 0, fetchedBytes: 0, cachedObjects: 0, cachedBytes: 0 };
  /** Every object read goes through here: demand before prefetch, one fetch per object at a time. */
  readonly source: FetchScheduler;
  private readonly unsubscribe: Array<() => void> = [];
  /** Indexes read so far, to name an object by what it is part of. */
  private readonly indexes: Array<{ label: string; ids: string[] }> = [];
  /** Content length of every object of this image known so far (index objects from the manifest, chunks from read indexes). */
  private readonly lengths = new Map<string, number>();
  /** Names of the peers added to the mirror group (to count what came from them). */
  private readonly peerNames = new Set<string>();

  private constructor(
    readonly manifest: Manifest,
    /** The signed manifest envelope as fetched (a page that shares hands it to peers, who verify it themselves). */
    readonly envelope: Uint8Array,
    readonly digest: string,
    readonly keyId: string,
    readonly mirrors: MirrorGroup,
    private readonly options: OpenImageOptions,
  ) {
    const upstream = options.cache ? new CacheStore(options.cache, mirrors, { writeBehind: true }) : mirrors;
    for (const { ref } of manifestBlobs(manifest)) this.lengths.set(ref.index, indexByteLength(ref.size, ref.chunkSize));
    this.source = new FetchScheduler(this.counted(upstream), 8);
    this.listen();
  }

  /** Fetches the listing and the manifest, verifies the signature and the trust pin. */
  static async open(options: OpenImageOptions): Promise<ImageReader> {
    const base = withSlash(options.repoUrl);
    const repo = transport(base, options);
    const read = async (path: string): Promise<Uint8Array> => {
      const bytes = await repo.read(path, { revalidate: true, maxBytes: 4 * 1024 * 1024 });
      if (!bytes) throw new HostmeError('image-not-found', `${base + path} does not exist`, { url: base + path });
      return bytes;
    };
    let version = options.version;
    if (!version) {
      let listing: { images?: Record<string, { latest?: string }> } | undefined;
      try {
        listing = JSON.parse(new TextDecoder().decode(await read('index.json'))) as typeof listing;
      } catch (err) {
        if (err instanceof HostmeError) throw err;
        throw new HostmeError('repo-corrupt', `${base}index.json is not a repository listing`, { url: base });
      }
      version = listing?.images?.[options.name]?.latest;
      if (!version) throw new HostmeError('image-not-found', `the repository has no image named "${options.name}"`, { name: options.name });
    }
    const origin = `manifests/${options.name}/${version}.json`;
    const pinned = options.publicKey ?? options.pins?.getItem(pinKey(base)) ?? undefined;
    const trusted = pinned ? await trustedKey(pinned) : undefined;
    const envelope = await read(origin);
    const opened = await openEnvelope(webCodecs, envelope, { origin, ...(trusted ? { trusted: [trusted] } : {}) });
    const manifest = parseManifest(opened.payload, origin);
    if (manifest.name !== options.name || manifest.version !== version) {
      throw new HostmeError('manifest-corrupt', `${origin}: the manifest names ${manifest.name} ${manifest.version}`, { origin });
    }
    if (!pinned) {
      try {
        options.pins?.setItem(pinKey(base), toBase64(opened.signer.publicKeyRaw));
      } catch {
        // Storage disabled: trust stays per page load.
      }
    }
    const urls = [base, ...(options.ignoreMirrors ? [] : manifest.mirrors.map(withSlash).filter((m) => m !== base))];
    const mirrors = new MirrorGroup(urls.map((url) => new TransportStore(url === base ? repo : transport(url, options), webCodecs)));
    return new ImageReader(manifest, envelope, opened.digest, opened.signer.keyId, mirrors, options);
  }

  /** The image's disks: chunked image + in-memory copy-on-write overlay, `memoryBytes` of decoded chunks each. */
  async openDisks(memoryBytes = 32 * 1024 * 1024): Promise<ImageDisk[]> {
    const disks = await openImageDisks(this.manifest, this.source, { overlay: memoryOverlay, memoryCacheBytes: memoryBytes });
    for (const disk of disks) this.addIndex(disk.label, disk.image.index);
    return disks;
  }

  /** "disk NAME chunk N" / "memory snapshot chunk N" for an object read so far (messages name what was lost, not just a hash). */
  labelOf(id: string): string {
    for (const { label, ids } of this.indexes) {
      const chunk = ids.indexOf(id);
      if (chunk >= 0) return `${label} chunk ${chunk}`;
    }
    return `object ${id.slice(0, 16)}`;
  }

  /** A whole blob (kernel, initrd, snapshot), chunks fetched in parallel. */
  readBlob(ref: BlobRef, label: string, parallel = 6, onChunk?: (bytes: number) => void): Promise<Uint8Array> {
    return readWholeBlob(this.source, ref, label, { parallel, onIndex: (index) => this.addIndex(label, index), ...(onChunk ? { onChunk } : {}) });
  }

  /** The content length of an object of this image whose index has been read, else undefined (not this image's, or not known yet). */
  lengthOf(id: string): number | undefined {
    return this.lengths.get(id);
  }

  /** Adds an untrusted peer (another tab, a Node peer) to the mirror group; what it serves is verified like any mirror's. */
  addPeer(peer: ObjectSource, options: PeerSourceOptions): void {
    this.peerNames.add(peer.name);
    this.mirrors.addPeers([peer], options);
  }

  private addIndex(label: string, index: ChunkIndex): void {
    this.indexes.push({ label, ids: index.ids });
    index.ids.forEach((id, i) => {
      if (!isHole(id)) this.lengths.set(id, chunkLength(index, i));
    });
  }

  /** Keep persistent-cache writes queued until `until` settles (the machine's start needs the main thread more). */
  holdWrites(until: Promise<unknown>): void {
    this.options.cache?.holdWrites(until);
  }

  /** Resolves when every fetched object has been handed to the persistent cache. */
  async flushCache(): Promise<void> {
    await this.options.cache?.flush();
  }

  close(): void {
    for (const stop of this.unsubscribe.splice(0)) stop();
  }

  private emit(event: ReaderEvent): void {
    this.options.onEvent?.(event);
  }

  /** Counts each object actually read (under the scheduler: a shared fetch counts once) by where it came from. */
  private counted(upstream: ObjectSource): ObjectSource {
    const cacheName = this.options.cache?.name;
    const get = async (ref: ObjectRef, options?: GetOptions): Promise<VerifiedObject> => {
      const object = await upstream.get(ref, options);
      if (object.source === cacheName) {
        this.stats.cachedObjects++;
        this.stats.cachedBytes += object.stored.length;
      } else {
        this.stats.fetchedObjects++;
        this.stats.fetchedBytes += object.stored.length;
        if (this.peerNames.has(object.source)) {
          this.stats.peerObjects = (this.stats.peerObjects ?? 0) + 1;
          this.stats.peerBytes = (this.stats.peerBytes ?? 0) + object.stored.length;
        }
      }
      this.emit({ type: 'progress', stats: { ...this.stats } });
      return object;
    };
    return { name: upstream.name, get, has: (id) => upstream.has(id), holdsLocally: (id) => upstream.holdsLocally?.(id) ?? Promise.resolve(false), close: () => upstream.close() };
  }

  /** The core's events about this reader's mirrors, as page events. */
  private listen(): void {
    const mine = new Set(this.mirrors.ranking().map((m) => m.name));
    const on = <N extends HostmeEventName>(name: N, handler: (message: HostmeEvents[N]) => void): void => {
      this.unsubscribe.push(onEvent(name, handler));
    };
    on('hostme:mirror:demote', ({ mirror, id, reason }) => {
      if (!mine.has(mirror)) return;
      const label = this.labelOf(id);
      this.emit({ type: 'invalid-object', id, label, source: mirror, message: `${label}: wrong bytes from ${mirror} for object ${id} (${reason})` });
    });
    on('hostme:http:request', ({ url, status, attempt, error }) => {
      if ((error || status >= 500) && [...mine].some((s) => url.startsWith(withSlash(s)))) this.emit({ type: 'retrying', url, attempt: attempt + 1, message: error ?? `HTTP ${status}` });
    });
    on('hostme:cache:degraded', ({ reason }) => this.emit({ type: 'cache-degraded', message: reason }));
  }
}

function transport(base: string, options: OpenImageOptions): HttpTransport {
  return new HttpTransport(base, {
    retries: options.retries ?? 2,
    backoffMs: 300,
    requestInit: { credentials: 'omit' },
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
}

/** The pinned (or page-required) key as the core's trusted-key form. */
async function trustedKey(base64: string): Promise<{ keyId: string; publicKeyRaw: Uint8Array }> {
  const raw = fromBase64(base64);
  if (!raw || raw.length !== 32) throw new HostmeError('key-invalid', 'the pinned publisher key is not a base64 Ed25519 key', {});
  return { keyId: await webCodecs.sha256Hex(raw), publicKeyRaw: raw };
}
