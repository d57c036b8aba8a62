import { constants, statSync, type Stats } from 'node:fs';
import { open, realpath, type FileHandle } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isObjectId } from '../format/digest.js';
import { CORS_EXPOSE, HttpError } from './http-util.js';
import { etagMatchesAny, ifRangeAllows, parseRange } from './range.js';
import type { HotObjects } from './hot-objects.js';

const IMMUTABLE = 'public, max-age=31536000, immutable';
const ETAG_CACHE_ENTRIES = 4096;

/** Is `segments` (a repository-relative path) a file the server may expose? */
export function isServablePath(segments: string[]): boolean {
  return segments.length > 0 && segments.every((s) => s !== '' && !s.startsWith('.') && !s.includes('.tmp-'));
}

/** objects/ab/<id>: content-addressed, immutable. */
export function objectIdOfPath(segments: string[]): string | undefined {
  if (segments.length !== 3 || segments[0] !== 'objects') return undefined;
  const id = segments[2]!;
  return isObjectId(id) && segments[1] === id.slice(0, 2) ? id : undefined;
}

export function contentTypeOf(name: string): string {
  return name.endsWith('.json') ? 'application/json' : 'application/octet-stream';
}

/**
 * Resolve a repository-relative path to a real file path inside the repository,
 * following symlinks only as long as they stay inside it. Returns undefined
 * for anything missing or outside (the caller answers 404 either way, so the
 * response does not reveal what exists outside the repository).
 */
export async function resolveInside(rootReal: string, segments: string[]): Promise<string | undefined> {
  let real: string;
  try {
    real = await realpath(join(rootReal, ...segments));
  } catch {
    return undefined;
  }
  if (!real.startsWith(rootReal + sep)) return undefined;
  const relative = real.slice(rootReal.length + 1).split(sep);
  return isServablePath(relative) ? real : undefined;
}

const LARGE_FILE_BYTES = 16 * 1024 * 1024;
const SMALL_FILE_BYTES = 256 * 1024;

/** Strong ETags of mutable files, by path + inode + size + mtime, so each version is hashed once. */
export class EtagCache {
  private readonly entries = new Map<string, { key: string; etag: string }>();

  async etagOf(path: string, handle: FileHandle, info: Stats): Promise<string> {
    const key = `${info.ino}:${info.size}:${info.mtimeMs}:${info.ctimeMs}`;
    const hit = this.entries.get(path);
    if (hit?.key === key) return hit.etag;
    // Large files (exported disks served as a plain directory) are not hashed on a
    // request path: their identity is inode + size + mtime, which changes with
    // every atomic replace, so the tag is still strong for our writers.
    if (info.size > LARGE_FILE_BYTES) return `"${createHash('sha256').update(key).digest('hex').slice(0, 32)}"`;
    const hash = createHash('sha256');
    const buffer = Buffer.allocUnsafe(64 * 1024);
    for (let position = 0; ; ) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      position += bytesRead;
    }
    const etag = `"${hash.digest('hex')}"`;
    this.entries.delete(path);
    this.entries.set(path, { key, etag });
    if (this.entries.size > ETAG_CACHE_ENTRIES) this.entries.delete(this.entries.keys().next().value!);
    return etag;
  }
}

const SMALL_CACHE_ENTRIES = 512;

interface SmallFile {
  body: Buffer;
  etag: string;
  lastModified: string;
  /** The whole header block of a plain 200 answer, computed once (see serveFromMemory). */
  headers: string[];
}

/**
 * The headers of a plain 200 answer (no range, no validator from the client),
 * in the order and with the values setCommonHeaders + sendBody give: the
 * memory fast path sends them in one writeHead, the general path builds them
 * header by header.
 */
export function plainResponseHeaders(etag: string, cacheControl: string, lastModified: string, contentType: string, size: number): string[] {
  return [
    'Access-Control-Allow-Origin', '*',
    'Access-Control-Expose-Headers', CORS_EXPOSE,
    'X-Content-Type-Options', 'nosniff',
    'ETag', etag,
    'Cache-Control', cacheControl,
    'Accept-Ranges', 'bytes',
    'Last-Modified', lastModified,
    'Content-Type', contentType,
    'Content-Length', String(size),
  ];
}

/** Paths the fast path takes: no percent-encoding, query or anything else that needs decoding. */
const PLAIN_PATH = /^\/(?:objects|manifests)\/[A-Za-z0-9._\/-]{1,400}$/;

/**
 * The hot path of a busy repository server, before any other routing: a plain
 * GET or HEAD (no Range, If-None-Match or If-Range) of an immutable object
 * held in memory, or of a small file (a manifest) cached and unchanged since
 * (one stat), answered with one precomputed header block and the body.
 * Returns the body bytes sent, or undefined: then the general path
 * (route → serveFile) answers, with the same headers, validators and ranges.
 */
export function serveFromMemory(req: IncomingMessage, res: ServerResponse, rootReal: string, hot: HotObjects | undefined, small: SmallFileCache | undefined): number | undefined {
  const method = req.method;
  if (method !== 'GET' && method !== 'HEAD') return undefined;
  const h = req.headers;
  if (h.range !== undefined || h['if-none-match'] !== undefined || h['if-range'] !== undefined) return undefined;
  const url = req.url;
  if (url === undefined || !PLAIN_PATH.test(url)) return undefined;
  const segments = url.slice(1).split('/');
  if (!isServablePath(segments)) return undefined;
  const id = objectIdOfPath(segments);
  let body: Buffer;
  let headers: string[];
  if (id) {
    const hit = hot?.get(id);
    if (!hit) return undefined;
    body = hit.body;
    headers = hit.headers ??= plainResponseHeaders(`"${id}"`, IMMUTABLE, hit.lastModified, contentTypeOf(id), body.length);
  } else {
    if (segments[0] !== 'manifests') return undefined;
    const hit = small?.lookup(join(rootReal, ...segments));
    if (!hit) return undefined;
    ({ body, headers } = hit);
  }
  res.writeHead(200, headers);
  if (method === 'HEAD') {
    res.end();
    return 0;
  }
  res.end(body);
  return body.length;
}

/**
 * Small mutable files (manifests, index.json) kept in memory with their ETag,
 * trusted while one stat() of the request path shows the same file
 * (device, inode, size, mtime, ctime): one system call per request instead of
 * realpath, open, fstat, read and close. stat() follows symlinks, and the same
 * device and inode is the same file that was resolved inside the repository.
 * Bounded: SMALL_CACHE_ENTRIES files of at most 256 KiB.
 */
export class SmallFileCache {
  private readonly entries = new Map<string, SmallFile & { key: string }>();

  static identity(info: Stats): string {
    return `${info.dev}:${info.ino}:${info.size}:${info.mtimeMs}:${info.ctimeMs}`;
  }

  lookup(path: string): SmallFile | undefined {
    const hit = this.entries.get(path);
    if (!hit) return undefined;
    // A synchronous stat, as nginx does in its event loop: one system call on a
    // local directory costs microseconds, a trip through the thread pool and a
    // promise cost more than the rest of the request (measured: a quarter of
    // the CPU time of a manifest request went to the asynchronous stat).
    const info = statSync(path, { throwIfNoEntry: false });
    if (info?.isFile() && SmallFileCache.identity(info) === hit.key) return hit;
    this.entries.delete(path);
    return undefined;
  }

  set(path: string, info: Stats, entry: { body: Buffer; etag: string; lastModified: string }): void {
    this.entries.delete(path);
    const type = contentTypeOf(path);
    const headers = plainResponseHeaders(entry.etag, 'no-cache', entry.lastModified, type, entry.body.length);
    this.entries.set(path, { key: SmallFileCache.identity(info), ...entry, headers });
    if (this.entries.size > SMALL_CACHE_ENTRIES) this.entries.delete(this.entries.keys().next().value!);
  }
}

/**
 * GET/HEAD of a repository file: validators, conditional requests, single
 * ranges, streamed bodies. Small objects are answered from `hot` (memory)
 * once read.
 */
export async function serveFile(req: IncomingMessage, res: ServerResponse, rootReal: string, segments: string[], etags: EtagCache, hot?: HotObjects, small?: SmallFileCache): Promise<void> {
  if (!isServablePath(segments)) throw new HttpError(404, 'not-found', 'no such file');
  const hotId = hot ? objectIdOfPath(segments) : undefined;
  const cached = hotId ? hot!.get(hotId) : undefined;
  if (cached) {
    sendBody(req, res, `"${hotId}"`, IMMUTABLE, cached.lastModified, contentTypeOf(hotId!), cached.body.length, (start, end) => res.end(cached.body.subarray(start, end + 1)));
    return;
  }
  const smallHit = small && !objectIdOfPath(segments) ? small.lookup(join(rootReal, ...segments)) : undefined;
  if (smallHit) {
    const { body } = smallHit;
    sendBody(req, res, smallHit.etag, 'no-cache', smallHit.lastModified, contentTypeOf(segments[segments.length - 1]!), body.length, (start, end) => res.end(body.subarray(start, end + 1)));
    return;
  }
  const real = await resolveInside(rootReal, segments);
  if (!real) throw new HttpError(404, 'not-found', 'no such file');
  let handle: FileHandle;
  try {
    // O_NOFOLLOW: the resolved path must not have become a symlink since realpath().
    handle = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    throw new HttpError(404, 'not-found', 'no such file');
  }
  let handedOver = false;
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new HttpError(404, 'not-found', 'no such file');
    const objectId = objectIdOfPath(segments);
    const etag = objectId ? `"${objectId}"` : await etags.etagOf(real, handle, info);
    const lastModified = info.mtime.toUTCString();
    const type = contentTypeOf(segments[segments.length - 1]!);
    if (objectId && hot?.wants(info.size)) {
      const body = await handle.readFile();
      if (body.length === info.size) hot.set(objectId, { body, lastModified });
      sendBody(req, res, etag, IMMUTABLE, lastModified, type, body.length, (start, end) => res.end(body.subarray(start, end + 1)));
      return;
    }
    const cacheControl = objectId ? IMMUTABLE : 'no-cache';
    if (info.size <= SMALL_FILE_BYTES) {
      // Manifests, index.json: one read and one write beat a file stream per request.
      const body = await handle.readFile();
      if (small && !objectId && body.length === info.size) small.set(join(rootReal, ...segments), info, { body, etag, lastModified });
      sendBody(req, res, etag, cacheControl, lastModified, type, body.length, (start, end) => res.end(body.subarray(start, end + 1)));
      return;
    }
    sendBody(req, res, etag, cacheControl, lastModified, type, info.size, (start, end) => {
      const stream = handle.createReadStream({ start, end, autoClose: true });
      handedOver = true;
      // pipeline destroys the file stream (closing the handle) when the client goes away.
      void pipeline(stream, res).catch(() => {});
    });
  } finally {
    if (!handedOver) await handle.close().catch(() => {});
  }
}

/** Validators, 304, single range or 416, then `body(start, end)` for the bytes to send (not for HEAD or empty). */
function sendBody(
  req: IncomingMessage,
  res: ServerResponse,
  etag: string,
  cacheControl: string,
  lastModified: string,
  contentType: string,
  size: number,
  body: (start: number, end: number) => void,
): void {
  res.setHeader('ETag', etag);
  res.setHeader('Cache-Control', cacheControl);
  res.setHeader('Accept-Ranges', 'bytes');
  res.setHeader('Last-Modified', lastModified);
  if (etagMatchesAny(req.headers['if-none-match'], etag)) {
    res.statusCode = 304;
    res.end();
    return;
  }
  res.setHeader('Content-Type', contentType);
  const rangeHeader = ifRangeAllows(headerValue(req.headers['if-range']), etag) ? headerValue(req.headers.range) : undefined;
  const range = parseRange(rangeHeader, size);
  if (range.kind === 'unsatisfiable') {
    throw new HttpError(416, 'range-not-satisfiable', `the file is ${size} bytes`, { 'Content-Range': `bytes */${size}` });
  }
  let start = 0;
  let end = size - 1;
  if (range.kind === 'partial') {
    ({ start, end } = range);
    res.statusCode = 206;
    res.setHeader('Content-Range', `bytes ${start}-${end}/${size}`);
  } else {
    res.statusCode = 200;
  }
  const length = size === 0 ? 0 : end - start + 1;
  res.setHeader('Content-Length', length);
  if (req.method === 'HEAD' || length === 0) {
    res.end();
    return;
  }
  body(start, end);
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(',') : value;
}
