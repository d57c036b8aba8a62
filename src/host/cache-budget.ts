import { readdir, lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { CacheDir } from '../runner/cache-dir.js';

const MiB = 1024 * 1024;
/** Entries visited when measuring the cache (a cache this large is measured as "at least"). */
const MAX_ENTRIES = 1_000_000;

/** Bytes a directory tree takes on disk (allocated blocks: sparse overlays count what they hold). */
export async function diskBytes(dir: string): Promise<number> {
  let total = 0;
  let visited = 0;
  const pending = [dir];
  while (pending.length && visited < MAX_ENTRIES) {
    const current = pending.pop()!;
    const names = await readdir(current).catch(() => [] as string[]);
    for (const name of names) {
      visited++;
      const path = join(current, name);
      const info = await lstat(path).catch(() => undefined);
      if (!info) continue;
      if (info.isDirectory()) pending.push(path);
      else total += info.blocks * 512;
    }
  }
  return total;
}

/**
 * The node's disk-cache limit (`hostme host --max-cache`): everything under
 * the node's cache directory counts (verified chunks, decoded copies, the
 * sites' copy-on-write overlays). Shared chunks are evicted least recently
 * used first to make room; the sites' own writes never are.
 */
export class CacheBudget {
  constructor(
    private readonly cacheDir: string,
    readonly limitBytes: number,
  ) {}

  used(): Promise<number> {
    return diskBytes(this.cacheDir);
  }

  /**
   * Can `moreBytes` be added? Evicts cached chunks when that makes room;
   * otherwise the reason, worded for the user.
   */
  async refuse(moreBytes: number, what: string): Promise<string | undefined> {
    let used = await this.used();
    if (used + moreBytes <= this.limitBytes) return undefined;
    const cache = new CacheDir(this.cacheDir);
    const { bytes: objectBytes } = await cache.usage();
    const room = this.limitBytes - moreBytes - (used - objectBytes);
    if (room >= 0) {
      await cache.gc(room);
      used = await this.used();
      if (used + moreBytes <= this.limitBytes) return undefined;
    }
    return `${what}: this node's disk cache would exceed its limit (${mib(used)} MiB used + ${mib(moreBytes)} MiB needed > ${mib(this.limitBytes)} MiB; hostme host --max-cache MiB raises it, removing a site frees its overlay)`;
  }
}

function mib(bytes: number): string {
  return (bytes / MiB).toFixed(bytes < 10 * MiB ? 1 : 0);
}
