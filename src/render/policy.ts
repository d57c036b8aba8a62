/**
 * What the render service's operator allows a request to reach
 * (`hostme serve --render --render-output-root … --render-allow-url …`). A
 * request comes over the network: it never chooses a directory, URL, bucket
 * or mirror outside these lists, so the server's own credentials
 * (HOSTME_EXPORT_TOKEN, AWS_*) only ever go where the operator said.
 */
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { HostmeError } from '../errors.js';
import { matchesPrefix } from '../build/url-prefix.js';

export interface RenderLimits {
  /** Largest single file a build may create (random files; default 1 GiB). */
  maxFileBytes: number;
  /** Largest disk a build may make (default 8 GiB). */
  maxDiskBytes: number;
  /** Wall time of one job, after which it is killed and failed, never retried (default 3600). */
  maxJobSeconds: number;
  /** Jobs waiting at once; more are refused with 503 (default 20). */
  maxQueued: number;
  /** Builds one token may submit per minute; more get 429 (default 10). */
  submitsPerMinute: number;
  /** Finished jobs kept (newest first); older ones are deleted with their logs (default 200). */
  keepFinished: number;
}

export interface RenderPolicy {
  /** Directories local outputs may go under. */
  outputRoots: string[];
  /** http(s) URL prefixes outputs may go to (HOSTME_EXPORT_TOKEN is sent only to these). */
  outputUrls: string[];
  /** s3://BUCKET/PREFIX outputs may go under. */
  outputBuckets: string[];
  /** Debian mirrors (URL prefixes) a request may name in base.debootstrap.mirror. */
  mirrors: string[];
  /**
   * URL prefixes a request may fetch (base.tarball.url) even though they are
   * on loopback, private or link-local addresses; public ones need no entry.
   */
  fetchUrls: string[];
  limits: RenderLimits;
}

export const DEFAULT_LIMITS: RenderLimits = {
  maxFileBytes: 1024 ** 3,
  maxDiskBytes: 8 * 1024 ** 3,
  maxJobSeconds: 3600,
  maxQueued: 20,
  submitsPerMinute: 10,
  keepFinished: 200,
};

export function renderPolicy(partial: Partial<Omit<RenderPolicy, 'limits'>> & { limits?: Partial<RenderLimits> } = {}): RenderPolicy {
  return {
    outputRoots: (partial.outputRoots ?? []).map((r) => path.resolve(r)),
    outputUrls: partial.outputUrls ?? [],
    outputBuckets: partial.outputBuckets ?? [],
    mirrors: partial.mirrors ?? [],
    fetchUrls: partial.fetchUrls ?? [],
    limits: { ...DEFAULT_LIMITS, ...partial.limits },
  };
}

function refused(message: string, context: Record<string, unknown>): HostmeError {
  return new HostmeError('render-output-refused', message, context);
}

/** Checks one requested output destination against the allow-lists; throws naming the rule it broke. */
export function checkOutputAllowed(to: string, policy: RenderPolicy): void {
  if (/^s3:\/\//i.test(to)) return checkBucket(to, policy);
  if (/^https?:\/\//i.test(to)) return checkUrl(to, policy);
  if (/^[a-z][a-z0-9+.-]*:/i.test(to) && !/^file:\/\//i.test(to)) {
    throw refused(`output "${to}": only directories under the output roots, allowed URL prefixes and buckets are accepted`, { to });
  }
  checkDirectory(/^file:\/\//i.test(to) ? new URL(to).pathname : to, policy);
}

function checkDirectory(dir: string, policy: RenderPolicy): void {
  if (!path.isAbsolute(dir)) throw refused(`output "${dir}": a directory output must be an absolute path under an output root`, { to: dir });
  const wanted = realpathOfNearest(path.resolve(dir));
  const inside = policy.outputRoots.some((root) => {
    const real = realpathOfNearest(root);
    return wanted === real || wanted.startsWith(real + path.sep);
  });
  if (!inside) {
    const roots = policy.outputRoots.length ? policy.outputRoots.join(', ') : 'none configured (--render-output-root)';
    throw refused(`output "${dir}" is not under an output root (allowed: ${roots})`, { to: dir });
  }
}

/** realpath of the longest existing ancestor, plus the rest: a symlink cannot lead an output out of its root. */
function realpathOfNearest(target: string): string {
  let existing = target;
  const rest: string[] = [];
  for (;;) {
    try {
      return path.join(realpathSync(existing), ...rest.reverse());
    } catch {
      const parent = path.dirname(existing);
      if (parent === existing) return target;
      rest.push(path.basename(existing));
      existing = parent;
    }
  }
}

function checkUrl(to: string, policy: RenderPolicy): void {
  let url: URL;
  try {
    url = new URL(to);
  } catch {
    throw refused(`output "${to}" is not a valid URL`, { to });
  }
  if (url.username || url.password) throw refused(`output URL "${url.host}": credentials in the URL are not accepted`, { to });
  if (!matchesPrefix(url.href, policy.outputUrls)) {
    const allowed = policy.outputUrls.length ? policy.outputUrls.join(', ') : 'none configured (--render-allow-url)';
    throw refused(`output URL "${url.href}" is not under an allowed URL prefix (allowed: ${allowed})`, { to });
  }
}

function checkBucket(to: string, policy: RenderPolicy): void {
  const normalized = to.replace(/\/*$/, '/');
  if (normalized.split('/').includes('..') || !policy.outputBuckets.some((b) => normalized.toLowerCase().startsWith(b.replace(/\/*$/, '/').toLowerCase()))) {
    const allowed = policy.outputBuckets.length ? policy.outputBuckets.join(', ') : 'none configured (--render-allow-bucket)';
    throw refused(`output "${to}" is not under an allowed bucket (allowed: ${allowed})`, { to });
  }
}
