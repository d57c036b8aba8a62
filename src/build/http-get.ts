/**
 * GET of a build input by URL, with the checks a server fetching URLs chosen
 * by a request needs (SSRF): only http(s), redirects followed by hand (each
 * hop checked, at most five, loops named), and, when guarded, the address
 * actually connected to must not be loopback, private, link-local or
 * otherwise internal unless the operator allowed that URL prefix. The check
 * runs inside the socket's DNS lookup, so a name cannot resolve to a public
 * address for the check and to an internal one for the connection.
 */
import http from 'node:http';
import https from 'node:https';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import type { Readable } from 'node:stream';
import { HostmeError } from '../errors.js';

export interface GetOptions {
  /** Refuse internal addresses except under these URL prefixes (untrusted requests). Absent: no address check. */
  guard?: { allowPrefixes: readonly string[]; matches: (href: string, prefixes: readonly string[]) => boolean };
  timeoutMs?: number;
  /** What the URL is, for messages ("base.tarball.url"). */
  what: string;
}

const MAX_REDIRECTS = 5;

const internal = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) internal.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8], ['64:ff9b::', 96]] as const) internal.addSubnet(net, bits, 'ipv6');

/** True for addresses a request must not reach on the server's behalf. */
export function isInternalAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return internal.check(mapped[1]!, 'ipv4');
  const family = isIP(address);
  if (family === 0) return true;
  return internal.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

function permanent(code: string, message: string, url: string): HostmeError {
  return new HostmeError(code, message, { url, permanent: true });
}

/** Resolves to the response body of a 2xx answer; anything else is a HostmeError that says what failed. */
export async function httpGet(start: string, options: GetOptions): Promise<{ body: Readable; url: string }> {
  const visited = new Set<string>();
  let current = start;
  for (let hop = 0; ; hop++) {
    const url = parseHttpUrl(current, options.what, hop > 0 ? start : undefined);
    if (visited.has(url.href)) throw permanent('base-redirect-loop', `${options.what}: ${start} redirects in a loop (back to ${url.href})`, start);
    visited.add(url.href);
    const guarded = options.guard && !options.guard.matches(url.href, options.guard.allowPrefixes);
    const response = await request(url, guarded ? options.what : undefined, options.timeoutMs ?? 300_000);
    const status = response.statusCode ?? 0;
    if (status >= 300 && status < 400 && response.headers.location) {
      response.resume();
      if (hop >= MAX_REDIRECTS) throw permanent('base-redirect-loop', `${options.what}: ${start} redirects more than ${MAX_REDIRECTS} times`, start);
      current = new URL(response.headers.location, url).href;
      continue;
    }
    if (status < 200 || status >= 300) {
      response.resume();
      throw new HostmeError('base-unreachable', `${options.what}: ${url.href} answered HTTP ${status}`, { url: url.href, status, permanent: status >= 400 && status < 500 });
    }
    return { body: response, url: url.href };
  }
}

function parseHttpUrl(text: string, what: string, redirectedFrom?: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw permanent('base-url-invalid', `${what}: "${text}" is not a URL`, text);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    const why = redirectedFrom ? `${redirectedFrom} redirects to a ${url.protocol}// URL` : `${url.protocol}// URLs are not fetched`;
    throw permanent('base-url-refused', `${what}: ${why}; only http and https are (a local file is base.tarball.path)`, text);
  }
  return url;
}

function request(url: URL, guardFor: string | undefined, timeoutMs: number): Promise<http.IncomingMessage> {
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (guardFor && isIP(host) && isInternalAddress(host)) return Promise.reject(refusedAddress(guardFor, url, host));
  const lookup = guardFor ? guardedLookup(guardFor, url) : undefined;
  const lib = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.get(url, { lookup, headers: { 'accept-encoding': 'identity' } }, resolve);
    req.setTimeout(timeoutMs, () => req.destroy(new HostmeError('base-unreachable', `${url.href}: no answer for ${timeoutMs / 1000} s`, { url: url.href })));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err instanceof HostmeError) return reject(err);
      reject(new HostmeError('base-unreachable', `cannot fetch the base ${url.href}: ${err.code ?? err.message}`, { url: url.href }));
    });
  });
}

function refusedAddress(what: string, url: URL, address: string): HostmeError {
  return permanent('base-url-refused', `${what}: ${url.host} is on an internal address (${address}); the operator allows such sources with --render-allow-fetch`, url.href);
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

function guardedLookup(what: string, url: URL): LookupFunction {
  const lookup = (hostname: string, options: { all?: boolean; family?: number | string }, callback: LookupCallback): void => {
    const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : typeof options.family === 'number' ? options.family : 0;
    dnsLookup(hostname, { family, all: true }, (err, addresses) => {
      if (err) return callback(err, '');
      const bad = addresses.find((a) => isInternalAddress(a.address));
      if (bad) return callback(refusedAddress(what, url, bad.address) as unknown as NodeJS.ErrnoException, '');
      if (options.all) return callback(null, addresses);
      callback(null, addresses[0]!.address, addresses[0]!.family);
    });
  };
  return lookup as unknown as LookupFunction;
}
