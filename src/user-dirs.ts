/**
 * Where hostme keeps per-user state, following the XDG base directories.
 * One definition, so the cache, the KVM verdict and the build cache agree.
 */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

/** The machine-wide cache: $HOSTME_CACHE_DIR, else $XDG_CACHE_HOME/hostme, else ~/.cache/hostme. */
export function userCacheRoot(): string {
  return resolve(process.env.HOSTME_CACHE_DIR || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'hostme'));
}
