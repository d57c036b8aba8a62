import { type PublisherKey } from '../format/node/keys.js';
import { openEnvelope } from '../format/envelope.js';
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
import { nodeCodecs } from '../format/node/codecs.js';

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
  /** How long one source may take to hand over the listing + manifest, or the latency probe (default 5 s). */
  metadataDeadlineMs?: number;
  /** A tracker's peers as extra untrusted sources (src/peer/swarm.ts, docs/peers.md). */
  peers?: PeerDirectory;
}

/** Where peers of an image are found: they join the mirror group, and may serve its signed manifest. */
export interface PeerDirectory {
  attach(group: MirrorGroup, name: string, version: string): Promise<number>;
  manifests(name: string, version: string): Promise<Array<{ source: string; envelope: Uint8Array }>>;
}

/** One source's manifest, or why it was not used. */
type Offer = { url: string; image: LoadedImage } | { url: string; problem: string; unavailable: boolean; error: unknown };

const created = (image: LoadedImage) => Date.parse(image.manifest.created);

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
  if (pinned) image = await openCached(options.cache, link, pinned, options.trusted);
  const urls = unique([link.repo, ...(options.extraMirrors ?? [])]);
  const reports: string[] = [];
  // Rollback protection: unless a version is asked for, never go back behind the newest one this machine has seen.
  const seenRaw = version || repo.isLocal ? null : await options.cache.cachedManifest(link.repo, link.name);
  const seen = seenRaw ? await openCachedQuietly(options.cache, link, seenRaw, options.trusted) : undefined;
  try {
    if (!image && urls.length > 1 && !repo.isLocal) {
      contacted = true;
      image = await newestOffer(link, urls, version, { ...options, http, pins, seen, reports });
    } else if (!image) {
      contacted = true;
      image = await repo.loadImage(link.name, version, { trusted: options.trusted });
      if (seen && created(image) < created(seen)) throw rollback(link.repo, image, seen);
    }
  } catch (err) {
    if (!isHostmeError(err, 'store-unavailable') || repo.isLocal) throw err;
    const cached = await options.cache.cachedManifest(link.repo, link.name, version);
    const fromPeer = !cached && version && options.peers ? await peerManifest(link, version, options, seen, reports) : undefined;
    if (fromPeer) {
      image = fromPeer;
      reports.push(`repository unreachable (${errorMessage(err)}); the signed manifest of ${link.name}@${version} came from a peer`);
    } else if (!cached) {
      throw new HostmeError('repo-unreachable', `cannot reach ${urls.join(' or ')} (${errorMessage(err)}) and ${link.name} has never been run here, so nothing is cached; check the URL or your network`, { repo: link.repo });
    }
    if (cached) {
      image = await openCached(options.cache, link, cached, options.trusted);
      offline = errorMessage(err);
      contacted = false;
    }
  }
  if (!image) throw new HostmeError('repo-unreachable', `cannot load ${link.name}`);
  if (!options.trusted) await pins.check(link.repo, link.name, image.signer);
  if (repo.isLocal) return { image, repo, source: repo.objects, offline, notices: [] };

  const notices: string[] = [...reports];
  if (contacted) {
    await options.cache.saveManifest(link.repo, link.name, image.manifest.version, image.envelope).catch((err) => {
      notices.push(`cannot save the manifest in the cache, so the next start needs the network: ${errorMessage(err)}`);
    });
  }
  const objectUrls = unique([...urls, ...image.manifest.mirrors]);
  const mirrors = new MirrorGroup(objectUrls.map((url) => new TransportStore(new HttpTransport(url, http), nodeCodecs)));
  if (objectUrls.length > 1 && contacted) {
    // All sources at once, each with a deadline: a dead or trickling one is ranked last instead of delaying the start.
    const slow = await mirrors.measure((s) => (s as TransportStore).transport.read(REPO_MARKER, { maxBytes: 4096 }), options.metadataDeadlineMs ?? 5_000, 500);
    for (const { name, problem } of slow) notices.push(`source ${name}: ${problem}; objects come from the other sources first`);
  }
  if (options.peers) {
    const found = await options.peers.attach(mirrors, image.manifest.name, image.manifest.version).catch(() => 0);
    notices.push(found ? `peers: ${found} found for ${image.manifest.name}@${image.manifest.version}; objects are verified, the origin stays the fallback` : `peers: none found for ${image.manifest.name}@${image.manifest.version}`);
  }
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

interface OfferContext extends ResolveOptions {
  http: HttpTransportOptions;
  pins: TrustPins;
  seen?: LoadedImage;
  reports: string[];
}

/**
 * The manifest from every source at once (the link's repository and each
 * --mirror: manifests are signed, so any of them may serve one), each with
 * a deadline; the newest trusted one wins, and none older than the newest
 * this machine has seen. Every source that was not used gets a report line.
 */
async function newestOffer(link: ImageLink, urls: string[], version: string | undefined, ctx: OfferContext): Promise<LoadedImage> {
  const deadline = ctx.metadataDeadlineMs ?? 5_000;
  const grace = Math.min(1_000, deadline);
  const offers: Offer[] = urls.map((url) => ({ url, problem: `no answer within ${grace} ms of the first source's, still waiting`, unavailable: true, error: undefined }));
  let firstAnswer: (() => void) | undefined;
  const answered = new Promise<void>((resolve) => (firstAnswer = resolve));
  const all = Promise.all(
    urls.map(async (url, i) => {
      const source = openRepository(url, { ...ctx.http, retries: 0, timeoutMs: deadline });
      try {
        const image = await withDeadline(source.loadImage(link.name, version, { trusted: ctx.trusted }), deadline);
        if (!ctx.trusted) await ctx.pins.check(link.repo, link.name, image.signer);
        offers[i] = { url, image };
        firstAnswer?.();
      } catch (err) {
        offers[i] = { url, problem: errorMessage(err), unavailable: isHostmeError(err, 'store-unavailable') || isHostmeError(err, 'deadline'), error: err };
      }
    }),
  );
  // Rank on the first answers: once one source has handed over a trusted manifest, the others get a short grace period, not the full deadline.
  await Promise.race([all, answered.then(() => new Promise<void>((resolve) => setTimeout(resolve, grace).unref()))]);
  const settled = offers.slice();
  let best: LoadedImage | undefined;
  for (const offer of settled) {
    if ('problem' in offer) {
      ctx.reports.push(`source ${offer.url}: ${offer.unavailable ? 'unreachable or slow' : 'refused'} for the manifest (${offer.problem})`);
    } else if (ctx.seen && created(offer.image) < created(ctx.seen)) {
      ctx.reports.push(`source ${offer.url}: refused for the manifest: it offers ${link.name}@${offer.image.manifest.version}, older than ${link.name}@${ctx.seen.manifest.version} already seen here (rollback)`);
    } else if (!best || created(offer.image) > created(best)) {
      best = offer.image;
    }
  }
  if (best) {
    for (const offer of settled) {
      if ('image' in offer && offer.image.digest !== best.digest && !(ctx.seen && created(offer.image) < created(ctx.seen))) {
        ctx.reports.push(`source ${offer.url}: offers ${link.name}@${offer.image.manifest.version}, not the newest (${best.manifest.version})`);
      }
    }
    return best;
  }
  const stale = settled.find((o): o is { url: string; image: LoadedImage } => 'image' in o);
  if (stale && ctx.seen) throw rollback(stale.url, stale.image, ctx.seen);
  const refused = settled.find((o) => 'problem' in o && !o.unavailable);
  if (refused && 'error' in refused) throw refused.error;
  throw new HostmeError('store-unavailable', settled.map((o) => ('problem' in o ? `${o.url}: ${o.problem}` : o.url)).join('; '));
}

/**
 * The repository is unreachable and nothing is cached: a peer may hand over
 * the signed manifest. Only with a key to check it against (--pubkey, or the
 * key pinned when this machine last saw the image): a peer must not become
 * the first to introduce a publisher key.
 */
async function peerManifest(link: ImageLink, version: string, options: ResolveOptions, seen: LoadedImage | undefined, reports: string[]): Promise<LoadedImage | undefined> {
  const trusted = options.trusted ?? (seen ? [seen.signer] : undefined);
  if (!trusted) {
    reports.push(`peers may serve ${link.name}@${version}'s manifest only with a trusted key (--pubkey), and none is known here`);
    return undefined;
  }
  for (const offer of await options.peers!.manifests(link.name, version).catch(() => [])) {
    try {
      const opened = await openEnvelope(nodeCodecs, offer.envelope, { origin: offer.source, trusted });
      const manifest = parseManifest(opened.payload, offer.source);
      if (manifest.name !== link.name || manifest.version !== version) throw new HostmeError('manifest-mismatch', `it is ${manifest.name}@${manifest.version}`);
      return { manifest, signer: opened.signer, digest: opened.digest, envelope: offer.envelope, origin: offer.source };
    } catch (err) {
      reports.push(`source ${offer.source}: refused for the manifest (${errorMessage(err)})`);
    }
  }
  return undefined;
}

function rollback(url: string, image: LoadedImage, seen: LoadedImage): HostmeError {
  const name = image.manifest.name;
  return new HostmeError(
    'manifest-rollback',
    `${url} offers ${name}@${image.manifest.version} (${image.manifest.created}), older than ${name}@${seen.manifest.version} (${seen.manifest.created}) already seen on this machine: refusing to go back (a stale mirror, or a replayed manifest); run ${name}@${image.manifest.version} explicitly if that is what you want`,
    { url, version: image.manifest.version, seen: seen.manifest.version },
  );
}

function withDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new HostmeError('deadline', `no answer within ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([work, expired]).finally(() => clearTimeout(timer));
}

async function openCachedQuietly(cache: CacheDir, link: ImageLink, cached: { version: string; envelope: Uint8Array }, trusted?: PublisherKey[]): Promise<LoadedImage | undefined> {
  try {
    return await openCached(cache, link, cached, trusted);
  } catch {
    return undefined;
  }
}

async function openCached(cache: CacheDir, link: ImageLink, cached: { version: string; envelope: Uint8Array }, trusted?: PublisherKey[]): Promise<LoadedImage> {
  const origin = cache.manifestFile(link.repo, link.name, cached.version);
  const opened = await openEnvelope(nodeCodecs, cached.envelope, { origin, trusted });
  return { manifest: parseManifest(opened.payload, origin), signer: opened.signer, digest: opened.digest, envelope: cached.envelope, origin };
}

function unique(urls: string[]): string[] {
  const seen = new Set<string>();
  return urls.map((u) => u.replace(/\/$/, '')).filter((u) => !seen.has(u) && seen.add(u));
}
