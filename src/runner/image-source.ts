import { openEnvelope, type PublisherKey } from '../format/signature.js';
import { parseManifest } from '../format/manifest.js';
import { errorMessage, HostmeError, isHostmeError } from '../errors.js';
import { openRepository, type LoadedImage, type Repository } from '../repo/repository.js';
import { HttpTransport, type HttpTransportOptions } from '../store/http-transport.js';
import { TransportStore } from '../store/transport-store.js';
import { MirrorGroup } from '../store/mirror-group.js';
import { CacheStore } from '../store/cache-store.js';
import { REPO_MARKER } from '../repo/layout.js';
import type { ObjectSource } from '../store/object-store.js';
import type { CacheDir } from './cache-dir.js';
import { TrustPins } from './trust-pins.js';
import type { ImageLink } from './link.js';

export interface ResolvedImage {
  image: LoadedImage;
  repo: Repository;
  /** Verified objects: cache → mirror group (remote) or the directory itself (local). */
  source: ObjectSource;
  mirrors?: MirrorGroup;
  cache?: CacheStore;
  /** Set when the repository could not be reached and the cached manifest was used. */
  offline?: string;
  /** Things the user should know (cache not usable, …). */
  notices: string[];
}

export interface ResolveOptions {
  cache: CacheDir;
  extraMirrors?: string[];
  trusted?: PublisherKey[];
  http?: HttpTransportOptions;
  /** Pin this version (the instance's base) unless the link names one. */
  preferVersion?: string;
}

/**
 * Find the signed manifest (from the repository, or from the cache when the
 * repository is unreachable) and build the verified object source for it.
 */
export async function resolveImage(link: ImageLink, options: ResolveOptions): Promise<ResolvedImage> {
  const http = { retries: 2, timeoutMs: 10_000, concurrency: 16, ...options.http };
  const repo = openRepository(link.repo, http);
  const version = link.version ?? options.preferVersion;
  const pins = new TrustPins(options.cache.root);
  let image: LoadedImage | undefined;
  let offline: string | undefined;
  let contacted = false;
  // A version, once published, never changes: with its signed manifest cached, no network is needed.
  const pinned = version && !repo.isLocal ? await options.cache.cachedManifest(link.repo, link.name, version) : null;
  if (pinned) image = openCached(options.cache, link, pinned, options.trusted);
  try {
    if (!image) {
      contacted = true;
      image = await repo.loadImage(link.name, version, { trusted: options.trusted });
    }
  } catch (err) {
    if (!isHostmeError(err, 'store-unavailable') || repo.isLocal) throw err;
    const cached = await options.cache.cachedManifest(link.repo, link.name, version);
    if (!cached) {
      throw new HostmeError('repo-unreachable', `cannot reach ${link.repo} (${errorMessage(err)}) and ${link.name} has never been run here, so nothing is cached; check the URL or your network`, { repo: link.repo });
    }
    image = openCached(options.cache, link, cached, options.trusted);
    offline = errorMessage(err);
    contacted = false;
  }
  if (!options.trusted) await pins.check(link.repo, link.name, image.signer);
  if (repo.isLocal) return { image, repo, source: repo.objects, offline, notices: [] };

  const notices: string[] = [];
  if (contacted) {
    await options.cache.saveManifest(link.repo, link.name, image.manifest.version, image.envelope).catch((err) => {
      notices.push(`cannot save the manifest in the cache, so the next start needs the network: ${errorMessage(err)}`);
    });
  }
  const urls = unique([link.repo, ...(options.extraMirrors ?? []), ...image.manifest.mirrors]);
  const mirrors = new MirrorGroup(urls.map((url) => new TransportStore(new HttpTransport(url, http))));
  if (urls.length > 1 && contacted) await mirrors.measure((s) => (s as TransportStore).transport.read(REPO_MARKER, { maxBytes: 4096 }));
  try {
    await options.cache.ensure();
  } catch (err) {
    // A read-only or full cache must not stop the VM: run uncached and say so.
    notices.push(`cache ${options.cache.root} is not usable (${errorMessage(err)}); running without caching`);
    return { image, repo, source: mirrors, mirrors, offline, notices };
  }
  const cache = new CacheStore(options.cache.objects, mirrors);
  return { image, repo, source: cache, mirrors, cache, offline, notices };
}

function openCached(cache: CacheDir, link: ImageLink, cached: { version: string; envelope: Uint8Array }, trusted?: PublisherKey[]): LoadedImage {
  const origin = cache.manifestFile(link.repo, link.name, cached.version);
  const opened = openEnvelope(cached.envelope, { origin, trusted });
  return { manifest: parseManifest(opened.payload, origin), signer: opened.signer, digest: opened.digest, envelope: cached.envelope, origin };
}

function unique(urls: string[]): string[] {
  const seen = new Set<string>();
  return urls.map((u) => u.replace(/\/$/, '')).filter((u) => !seen.has(u) && seen.add(u));
}
