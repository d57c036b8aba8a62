/**
 * Fetching build inputs from the network: tarballs by URL, cached by digest
 * under <cacheDir>/bases/<sha256>, with URL rewriting from the hostme config
 * file ($HOSTME_CONFIG or ~/.config/hostme/config.json):
 *   {"mirrors": [{"from": "https://origin/", "to": "http://local-mirror/"}]}
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { HostmeError } from '../errors.js';
import { httpGet } from './http-get.js';

export interface MirrorRule {
  from: string;
  to: string;
}

export function configPath(): string {
  return process.env.HOSTME_CONFIG || path.join(process.env.XDG_CONFIG_HOME || path.join(homedir(), '.config'), 'hostme', 'config.json');
}

/** Mirror rules from the config file; none when it does not exist. */
export async function loadMirrorRules(file = configPath()): Promise<MirrorRule[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return [];
  }
  let doc: { mirrors?: unknown };
  try {
    doc = JSON.parse(text) as { mirrors?: unknown };
  } catch (err) {
    throw new HostmeError('config-invalid', `${file}: not valid JSON (${(err as Error).message})`, { file });
  }
  const mirrors = doc.mirrors ?? [];
  if (!Array.isArray(mirrors) || !mirrors.every((m) => typeof m?.from === 'string' && typeof m?.to === 'string')) {
    throw new HostmeError('config-invalid', `${file}: "mirrors" must be a list of {"from": URL prefix, "to": URL prefix}`, { file });
  }
  return mirrors as MirrorRule[];
}

/** Applies the first rule whose `from` prefixes the URL. */
export function rewriteUrl(url: string, rules: readonly MirrorRule[]): string {
  for (const rule of rules) if (url.startsWith(rule.from)) return rule.to + url.slice(rule.from.length);
  return url;
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return hash.digest('hex');
}

function mismatch(what: string, expected: string, actual: string): HostmeError {
  return new HostmeError('base-digest-mismatch', `${what}: sha256 is ${actual} but the manifest expects ${expected}`, { source: what, expected, actual });
}

/** A local tarball whose digest must match. */
export async function checkLocalFile(file: string, expected: string): Promise<string> {
  const actual = await sha256File(file).catch((err: NodeJS.ErrnoException) => {
    throw new HostmeError('base-unreadable', `${file}: cannot read the base tarball (${err.code ?? err.message})`, { file });
  });
  if (actual !== expected) throw mismatch(file, expected, actual);
  return file;
}

/**
 * Returns the cached file for `sha256`, downloading it (through the mirror
 * rules) when missing. Verified before it enters the cache.
 */
export interface FetchGuard {
  /** URL prefixes on internal addresses that may be fetched anyway (the operator's allow-list). */
  allowPrefixes: readonly string[];
  matches: (href: string, prefixes: readonly string[]) => boolean;
}

export async function fetchByDigest(url: string, expected: string, cacheDir: string, log?: (line: string) => void, guard?: FetchGuard): Promise<string> {
  const dir = path.join(cacheDir, 'bases');
  const cached = path.join(dir, expected);
  if (await stat(cached).then((s) => s.isFile(), () => false)) {
    if ((await sha256File(cached)) === expected) return cached;
    await rm(cached, { force: true }); // corrupt cache entry: fetch again
  }
  const rules = await loadMirrorRules();
  const effective = rewriteUrl(url, rules);
  if (effective !== url) log?.(`fetching ${url} via ${effective}`);
  else log?.(`fetching ${url}`);
  await mkdir(dir, { recursive: true });
  const partial = `${cached}.${process.pid}.${randomBytes(4).toString('hex')}.partial`;
  // A URL the mirror rules produced is the operator's: only the request's own URL is guarded.
  const { body } = await httpGet(effective, { what: 'base.tarball.url', guard: effective === url ? guard : undefined });
  const hash = createHash('sha256');
  try {
    body.on('data', (chunk: Buffer) => hash.update(chunk));
    await pipeline(body, createWriteStream(partial));
  } catch (err) {
    await rm(partial, { force: true });
    throw new HostmeError('base-unreachable', `download of ${effective} failed: ${(err as Error).message}`, { url, effective }, { cause: err });
  }
  const actual = hash.digest('hex');
  if (actual !== expected) {
    await rm(partial, { force: true });
    // An untrusted request learns that the bytes differ, not what they hash to (that would leak internal content).
    if (guard) throw new HostmeError('base-digest-mismatch', `base.tarball.url: the download does not match base.tarball.sha256 ${expected}`, { expected });
    throw mismatch(effective, expected, actual);
  }
  await rename(partial, cached);
  return cached;
}
