import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { imageNamePattern, versionPattern, type Manifest } from '../format/manifest.js';
import { isHostmeError } from '../errors.js';
import { openRepository, type LoadedImage, type Repository } from '../repo/repository.js';
import type { RepoListing } from '../repo/layout.js';
import { HttpError } from './http-util.js';

export interface DiskSummary {
  name: string;
  /** Virtual size in bytes. */
  size: number;
  chunkSize: number;
  /** Bytes stored for this disk's objects when it was packed, when known. */
  storedBytes?: number;
}

/** What GET /api/images/NAME[/VERSION] answers. */
export interface ImageSummary {
  name: string;
  version: string;
  latest: boolean;
  created: string;
  description?: string;
  hardware: Manifest['hardware'];
  bootMode: Manifest['boot']['mode'];
  disks: DiskSummary[];
  hasSnapshot: boolean;
  hasPrefetch: boolean;
  signer: { keyId: string };
  manifestDigest: string;
  /** Repository-relative path of the signed manifest. */
  manifestPath: string;
  versions: string[];
  /** Landing page of this image on this server. */
  pageUrl: string;
  runCommand: string;
}

/**
 * Read-side view of the served directory through the regular Repository code
 * (signatures checked on every manifest). The listing scan is cached and
 * re-done only when a manifests/ directory changes.
 */
export class RepoView {
  readonly repo: Repository;
  private cached?: { stamp: string; listing: RepoListing };

  constructor(readonly root: string) {
    this.repo = openRepository(root);
  }

  async listing(): Promise<RepoListing> {
    const stamp = await this.stamp();
    if (this.cached?.stamp === stamp) return this.cached.listing;
    const listing = await this.repo.listing();
    this.cached = { stamp, listing };
    return listing;
  }

  /** Throws HttpError 404 for unknown or malformed names and versions. */
  async image(name: string, version?: string): Promise<{ image: LoadedImage; listing: RepoListing }> {
    if (!imageNamePattern.test(name)) throw new HttpError(404, 'image-not-found', `no image named "${name}"`);
    if (version !== undefined && !versionPattern.test(version)) throw new HttpError(404, 'image-not-found', `no version "${version}" of image "${name}"`);
    const listing = await this.listing();
    const entry = listing.images[name];
    if (!entry) throw new HttpError(404, 'image-not-found', `no image named "${name}"`);
    const resolved = version ?? entry.latest;
    if (!entry.versions.some((v) => v.version === resolved)) throw new HttpError(404, 'image-not-found', `no version "${resolved}" of image "${name}"`);
    try {
      return { image: await this.repo.loadImage(name, resolved), listing };
    } catch (err) {
      if (isHostmeError(err, 'image-not-found')) throw new HttpError(404, 'image-not-found', `no version "${resolved}" of image "${name}"`);
      throw err;
    }
  }

  private async stamp(): Promise<string> {
    const dir = join(this.root, 'manifests');
    const top = await stat(dir).catch(() => null);
    if (!top) return 'none';
    const parts = [`${top.mtimeMs}`];
    for (const name of (await readdir(dir).catch(() => [] as string[])).sort()) {
      const info = await stat(join(dir, name)).catch(() => null);
      parts.push(`${name}:${info?.ino}:${info?.mtimeMs}`);
    }
    return parts.join('|');
  }
}

/** `pinned`: the version was asked for explicitly, so the page and run command name it too. */
export function summarize(image: LoadedImage, listing: RepoListing, baseUrl: string, pinned: boolean): ImageSummary {
  const m = image.manifest;
  const entry = listing.images[m.name];
  const pageUrl = `${baseUrl}/i/${encodeURIComponent(m.name)}${pinned ? `/${encodeURIComponent(m.version)}` : ''}`;
  return {
    name: m.name,
    version: m.version,
    latest: entry?.latest === m.version,
    created: m.created,
    ...(m.description !== undefined ? { description: m.description } : {}),
    hardware: m.hardware,
    bootMode: m.boot.mode,
    disks: m.disks.map((d) => ({ name: d.name, size: d.size, chunkSize: d.chunkSize, ...(d.storedBytes !== undefined ? { storedBytes: d.storedBytes } : {}) })),
    hasSnapshot: m.memorySnapshot !== undefined,
    hasPrefetch: (m.prefetch?.length ?? 0) > 0,
    signer: { keyId: image.signer.keyId },
    manifestDigest: image.digest,
    manifestPath: `manifests/${m.name}/${m.version}.json`,
    versions: entry ? entry.versions.map((v) => v.version) : [m.version],
    pageUrl,
    runCommand: `hostme run ${pageUrl}`,
  };
}
