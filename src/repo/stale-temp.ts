/**
 * Temporary files a crashed writer left in a repository: uploads and atomic
 * writes go to `NAME.tmp-PID-RANDOM` (server, DirTransport) and local exports
 * to `NAME.tmp-…` before the rename, so after a crash they stay forever.
 * `hostme serve` removes the ones older than an hour when it starts (younger
 * ones may belong to a `hostme pack` running right now).
 */
import { lstat, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

export const STALE_TEMP_AGE_MS = 60 * 60 * 1000;
const TEMP_NAME = /\.tmp-|\.partial$/;

/** Removes stale temporary files under `root` (not following symlinks, skipping dot-directories); returns how many. */
export async function removeStaleTemp(root: string, maxAgeMs = STALE_TEMP_AGE_MS, now = Date.now()): Promise<number> {
  let removed = 0;
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      const full = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (!entry.name.startsWith('.')) await walk(full);
      } else if (entry.isFile() && TEMP_NAME.test(entry.name)) {
        const info = await lstat(full).catch(() => null);
        if (info && now - info.mtimeMs > maxAgeMs && (await rm(full).then(() => true, () => false))) removed++;
      }
    }
  };
  await walk(root);
  return removed;
}
