import type { Manifest } from '../format/manifest.js';
import type { PublisherKey } from '../format/node/keys.js';
import type { LoadedImage, Repository } from './repository.js';

/** Next integer version after the highest numeric one ("1" for a new image). */
export async function nextVersion(repo: Repository, name: string): Promise<string> {
  const listing = await repo.listing().catch(() => undefined);
  const versions = listing?.images[name]?.versions ?? [];
  const numeric = versions.map((v) => Number(v.version)).filter((n) => Number.isInteger(n));
  return String(numeric.length ? Math.max(...numeric) + 1 : 1);
}

/**
 * Publish a version derived from `base` (hostme commit, profile, snapshot):
 * the base manifest with `changes` applied, the given version or the next
 * integer one, a fresh timestamp and a `parent` link to the base envelope.
 */
export async function publishDerived(
  repo: Repository,
  base: { manifest: Manifest; digest: string },
  changes: Partial<Manifest>,
  key: PublisherKey,
  version?: string,
): Promise<LoadedImage> {
  const manifest: Manifest = {
    ...base.manifest,
    ...changes,
    version: version ?? (await nextVersion(repo, base.manifest.name)),
    created: new Date().toISOString(),
    parent: { version: base.manifest.version, digest: base.digest },
  };
  return repo.publish(manifest, key);
}
