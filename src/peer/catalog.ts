import { readFile } from 'node:fs/promises';
import { chunkLength, decodeIndex, indexByteLength, isHole } from '../format/chunk-index.js';
import { isObjectId, objectPath, type ObjectId } from '../format/digest.js';
import { decodeObject } from '../format/object-codec.js';
import { manifestBlobs, parseManifest } from '../format/manifest.js';
import { openEnvelope } from '../format/envelope.js';
import { nodeCodecs } from '../format/node/codecs.js';
import type { CacheDir } from '../runner/cache-dir.js';

/** One image a peer shares: the repository it came from, its name and version. */
export interface SharedImage {
  repo: string;
  name: string;
  version: string;
}

/** How long a computed set of shareable ids is reused before the cache is looked at again. */
const REFRESH_MS = 2000;
const MAX_STORED = 64 * 1024 * 1024;
/** The longest a request may be held for an object in flight here (docs/peers.md "Flash crowd"). */
export const MAX_WAIT_MS = 10_000;
/** A wait that ends with an object the id set does not know yet looks at the cache again, at most this often. */
const WAIT_REFRESH_MS = 250;

/**
 * This machine's fetch of an object it owns in the swarm's plan: the one
 * queued or running, else (given the object's length) a new one (see
 * Swarm.coordinate); undefined when it does not fetch that object for others.
 */
export type FetchForSwarm = (id: ObjectId, length?: number) => Promise<{ stored: Uint8Array }> | undefined;

/**
 * What a peer may hand out, whatever the transport (HTTP, WebRTC): the stored
 * bytes of objects that belong to the images it shares (chunk indexes and
 * the chunks they list) and those images' signed manifests. Nothing else of
 * the cache is reachable: other images' objects (a private image cached on
 * this machine) are refused like absent ones, and no path comes from a request.
 */
export class ShareCatalog {
  /** Shareable ids and their content lengths. */
  private ids = new Map<ObjectId, number>();
  /** Whether the last look found the index of every blob of the shared images (so an unknown id is not one of theirs). */
  private complete = false;
  private refreshed = 0;
  private refreshing?: Promise<void>;
  /** Set by the swarm when this machine coordinates first fetches: the objects it fetches for the others. */
  fetchForSwarm?: FetchForSwarm;

  constructor(
    readonly cache: CacheDir,
    private images: SharedImage[],
  ) {}

  /** NAME@VERSION keys announced to trackers. */
  get keys(): string[] {
    return [...new Set(this.images.map((i) => `${i.name}@${i.version}`))];
  }

  setImages(images: SharedImage[]): void {
    this.images = images;
    this.refreshed = 0;
  }

  /**
   * Stored bytes (zstd frame or raw, as cached) of a shared object, or null.
   * With `waitMs`, an object not cached yet but being fetched here for the
   * swarm is answered when that fetch completes (null after `waitMs`).
   */
  async object(id: string, waitMs = 0): Promise<Uint8Array | null> {
    if (!isObjectId(id) || isHole(id)) return null;
    const cached = await this.cachedObject(id);
    if (cached || waitMs <= 0) return cached;
    return this.whenFetched(id, Math.min(waitMs, MAX_WAIT_MS));
  }

  private async whenFetched(id: ObjectId, waitMs: number): Promise<Uint8Array | null> {
    if (!this.fetchForSwarm) return null;
    // A fetch of an object of the shared images in flight here (indexes included, before they are cached) ...
    const deadline = Date.now() + waitMs;
    let pending = this.fetchForSwarm(id);
    while (!pending) {
      // ... or one this machine starts for the swarm: only objects its shared images list, as for cached ones.
      if (!this.ids.has(id) && Date.now() - this.refreshed > WAIT_REFRESH_MS) await this.refresh();
      const length = this.ids.get(id);
      pending = this.fetchForSwarm(id, length);
      // This machine is still reading its own indexes (it started a moment after the asker): look again shortly.
      if (pending || length !== undefined || this.complete || Date.now() + WAIT_REFRESH_MS > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, WAIT_REFRESH_MS));
    }
    if (!pending) return null;
    waitMs = Math.max(0, deadline - Date.now());
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), waitMs)));
    const object = await Promise.race([pending.catch(() => null), expired]).finally(() => clearTimeout(timer));
    return object && object.stored.length <= MAX_STORED ? object.stored : null;
  }

  private async cachedObject(id: ObjectId): Promise<Uint8Array | null> {
    if (!this.ids.has(id) && Date.now() - this.refreshed > REFRESH_MS) await this.refresh();
    if (!this.ids.has(id)) return null;
    const bytes = await readFile(this.cache.objects.dir.fullPath(objectPath(id))).catch(() => null);
    return bytes && bytes.length <= MAX_STORED ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length) : null;
  }

  /** The signed manifest envelope of a shared image, or null. */
  async manifest(name: string, version: string): Promise<Uint8Array | null> {
    const image = this.images.find((i) => i.name === name && i.version === version);
    if (!image) return null;
    return (await this.cache.cachedManifest(image.repo, name, version))?.envelope ?? null;
  }

  private refresh(): Promise<void> {
    this.refreshing ??= this.collect().finally(() => {
      this.refreshing = undefined;
      this.refreshed = Date.now();
    });
    return this.refreshing;
  }

  /** Every object id of the shared images whose index is in the cache. */
  private async collect(): Promise<void> {
    const ids = new Map<ObjectId, number>();
    let complete = true;
    for (const image of this.images) {
      const cached = await this.cache.cachedManifest(image.repo, image.name, image.version);
      if (!cached) {
        complete = false;
        continue;
      }
      try {
        const manifest = parseManifest((await openEnvelope(nodeCodecs, cached.envelope, { origin: image.name })).payload, image.name);
        for (const { ref } of manifestBlobs(manifest)) {
          const stored = await readFile(this.cache.objects.dir.fullPath(objectPath(ref.index))).catch(() => null);
          if (!stored) {
            complete = false;
            continue;
          }
          const indexLength = indexByteLength(ref.size, ref.chunkSize);
          ids.set(ref.index, indexLength);
          const index = decodeIndex(await decodeObject(nodeCodecs, ref.index, indexLength, stored, 'cache'));
          index.ids.forEach((id, i) => {
            if (!isHole(id)) ids.set(id, chunkLength(index, i));
          });
        }
      } catch {
        // A damaged cache entry shares nothing; the runner repairs it on its next read.
      }
    }
    this.ids = ids;
    this.complete = complete;
  }
}
