import { openRepository } from '../repo/repository.js';
import type { HostingPolicy } from './hub.js';

/** How long a repository's listing and an image's hosting policy are reused before being read again. */
const LISTING_TTL_MS = 1000;
const POLICY_TTL_MS = 10_000;

/**
 * The sites a hub serves: the images of its repository, and for each the
 * hosting policy its signed manifest asks for (`hosting: open | invite`).
 * Read at most once a second (listing) / ten seconds (manifest), never per
 * gateway request.
 */
export function repoSites(repoDir: string): { siteExists: (site: string) => Promise<boolean>; sitePolicy: (site: string) => Promise<HostingPolicy | undefined> } {
  const repo = openRepository(repoDir);
  let names: { at: number; list: Set<string> } | undefined;
  let reading: Promise<Set<string>> | undefined;
  const policies = new Map<string, { at: number; policy: HostingPolicy | undefined }>();
  const siteExists = async (site: string): Promise<boolean> => {
    if (!names || Date.now() - names.at > LISTING_TTL_MS) {
      // Concurrent gateway requests share one read of the listing.
      reading ??= repo
        .listing()
        .then((listing) => new Set(Object.keys(listing.images)))
        .finally(() => (reading = undefined));
      names = { at: Date.now(), list: await reading };
    }
    return names.list.has(site);
  };
  const sitePolicy = async (site: string): Promise<HostingPolicy | undefined> => {
    const cached = policies.get(site);
    if (cached && Date.now() - cached.at < POLICY_TTL_MS) return cached.policy;
    const { manifest } = await repo.loadImage(site, undefined);
    if (policies.size > 10_000) policies.clear();
    policies.set(site, { at: Date.now(), policy: manifest.hosting });
    return manifest.hosting;
  };
  return { siteExists, sitePolicy };
}
