import { readFile } from 'node:fs/promises';
import { decodeIndex, indexByteLength, isHole } from '../format/chunk-index.js';
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

/**
 * What a peer may hand out, whatever the transport (HTTP, WebRTC): the stored
 * bytes of objects that belong to the images it shares (chunk indexes and
 * the chunks they list) and those images' signed manifests. Nothing else of
 * the cache is reachable: other images' objects (a private image cached on
 * this machine) are refused like absent ones, and no path comes from a request.
 */
export class ShareCatalog {
  private ids = new Set<ObjectId>();
  private refreshed = 0;
  private refreshing?: Promise<void>;

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

  /** Stored bytes (zstd frame or raw, as cached) of a shared object, or null. */
  async object(id: string): Promise<Uint8Array | null> {
    if (!isObjectId(id) || isHole(id)) return null;
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
    const ids = new Set<ObjectId>();
    for (const image of this.images) {
      const cached = await this.cache.cachedManifest(image.repo, image.name, image.version);
      if (!cached) continue;
      try {
        const manifest = parseManifest((await openEnvelope(nodeCodecs, cached.envelope, { origin: image.name })).payload, image.name);
        for (const { ref } of manifestBlobs(manifest)) {
          const stored = await readFile(this.cache.objects.dir.fullPath(objectPath(ref.index))).catch(() => null);
          if (!stored) continue;
          ids.add(ref.index);
          const index = decodeIndex(await decodeObject(nodeCodecs, ref.index, indexByteLength(ref.size, ref.chunkSize), stored, 'cache'));
          for (const id of index.ids) if (!isHole(id)) ids.add(id);
        }
      } catch {
        // A damaged cache entry shares nothing; the runner repairs it on its next read.
      }
    }
    this.ids = ids;
  }
}
