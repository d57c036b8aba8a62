import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, realpath, rename, rm, rmdir, stat } from 'node:fs/promises';
import { dirname, join, sep } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { HostmeError, errorMessage } from '../errors.js';
import { declaredContentSize, inflateStreaming } from '../format/node/zstd-capped.js';
import { isObjectId, objectPath } from '../format/digest.js';
import { sha256Hex, nodeCodecs } from '../format/node/codecs.js';
import { imageNamePattern, manifestBlobs, parseManifest, versionPattern } from '../format/manifest.js';
import { parsePublicKeyLine } from '../format/node/keys.js';
import { openEnvelope } from '../format/envelope.js';
import { REPO_FORMAT_VERSION, type RepoListing } from '../repo/layout.js';
import { HttpError, sendJson } from './http-util.js';

export const DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024 * 1024;
/** Cap on the uncompressed size of an uploaded zstd object while verifying it (hashed streaming, not held in memory). */
export const DEFAULT_MAX_OBJECT_CONTENT_BYTES = 1024 * 1024 * 1024;
const MAX_METADATA_BYTES = 4 * 1024 * 1024;
const MAX_KEY_BYTES = 4096;
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

export interface UploadOptions {
  rootReal: string;
  token?: string;
  maxUploadBytes: number;
  maxObjectContentBytes: number;
}

type UploadKind = 'object' | 'manifest' | 'key' | 'listing' | 'marker';
type UploadTarget = { kind: UploadKind; name?: string; version?: string; id?: string };

/** The only paths a PUT may write, each with its own validation. */
export function classifyUploadPath(segments: string[]): UploadTarget | undefined {
  const [a, b, c] = segments;
  if (segments.length === 1 && a === 'index.json') return { kind: 'listing' };
  if (segments.length === 1 && a === 'hostme-repo.json') return { kind: 'marker' };
  if (segments.length === 2 && a === 'keys' && b!.endsWith('.pub') && isObjectId(b!.slice(0, -4))) return { kind: 'key', id: b!.slice(0, -4) };
  if (segments.length === 3 && a === 'objects' && isObjectId(c!) && b === c!.slice(0, 2)) return { kind: 'object', id: c };
  if (segments.length === 3 && a === 'manifests' && imageNamePattern.test(b!) && c!.endsWith('.json')) {
    const version = c!.slice(0, -'.json'.length);
    if (versionPattern.test(version)) return { kind: 'manifest', name: b, version };
  }
  return undefined;
}

/** Constant-time token check (both sides hashed first, so lengths do not leak either). */
export function tokenMatches(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

function bodyPending(req: IncomingMessage): boolean {
  return !req.complete && (req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0);
}

/** Refuse before reading the body: close the connection rather than read a body we do not want. */
function refuse(req: IncomingMessage, status: number, code: string, message: string, headers: Record<string, string> = {}): HttpError {
  return new HttpError(status, code, message, bodyPending(req) ? { ...headers, Connection: 'close' } : headers);
}

/** PUT of a repository file: auth, path and size checks, streamed to a temp file, validated, then renamed into place. */
export async function handleUpload(req: IncomingMessage, res: ServerResponse, segments: string[], options: UploadOptions): Promise<void> {
  if (options.token === undefined) throw refuse(req, 403, 'read-only', 'read-only server: publishing is disabled (start it with a token to accept uploads)');
  const auth = /^Bearer[ ]+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  if (!auth) throw refuse(req, 401, 'unauthorized', 'publishing needs "Authorization: Bearer <token>"', { 'WWW-Authenticate': 'Bearer realm="hostme"' });
  if (!tokenMatches(auth[1]!, options.token)) throw refuse(req, 403, 'forbidden', 'wrong token');

  const target = classifyUploadPath(segments);
  if (!target) {
    throw refuse(req, 400, 'bad-upload-path', 'uploads may only write objects/xx/<id>, manifests/NAME/VERSION.json, keys/<keyId>.pub, index.json or hostme-repo.json');
  }
  const limit =
    target.kind === 'object' ? options.maxUploadBytes : target.kind === 'key' ? Math.min(options.maxUploadBytes, MAX_KEY_BYTES) : Math.min(options.maxUploadBytes, MAX_METADATA_BYTES);
  const declared = req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length']);
  if (declared !== undefined && declared > limit) throw refuse(req, 413, 'too-large', `body of ${declared} bytes exceeds the ${limit}-byte limit`);

  const file = join(options.rootReal, ...segments);
  const dir = dirname(file);
  await mkdir(dir, { recursive: true }).catch((err: NodeJS.ErrnoException) => {
    throw storageError(err, req);
  });
  try {
    await store(req, res, segments, options, target, limit, file, dir);
  } catch (err) {
    // A refused upload leaves nothing behind, not even the directories made for it
    // (nor empty ones a concurrent refused upload made: rmdir only removes empty ones).
    await removeEmptyDirs(dir, options.rootReal);
    throw err;
  }
}

async function removeEmptyDirs(from: string, root: string): Promise<void> {
  for (let at = from; at.startsWith(root + sep); at = dirname(at)) {
    if (!(await rmdir(at).then(() => true, () => false))) return;
  }
}

async function store(req: IncomingMessage, res: ServerResponse, segments: string[], options: UploadOptions, target: UploadTarget, limit: number, file: string, dir: string): Promise<void> {
  // Never write through a symlinked directory that leaves the repository.
  const dirReal = await realpath(dir);
  if (dirReal !== options.rootReal && !dirReal.startsWith(options.rootReal + sep)) throw refuse(req, 403, 'forbidden', 'refusing to write outside the repository');
  const existing = await stat(file).catch(() => null);

  if (target.kind === 'object' && existing?.isFile()) {
    // Objects are immutable and content-addressed: keep the one we have, but read the body so the connection stays usable.
    if (req.headers.expect) res.writeContinue();
    await drain(req, limit);
    sendJson(req, res, 200, { ok: true, path: segments.join('/'), created: false, existed: true });
    return;
  }

  if (req.headers.expect) res.writeContinue();
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  let renamed = false;
  try {
    const body = await receive(req, tmp, limit, target.kind !== 'object');
    if (target.kind === 'object') {
      await verifyObject(target.id!, tmp, body.sha256, body.length, options.maxObjectContentBytes);
    } else {
      if (existing && (target.kind === 'manifest' || target.kind === 'key')) {
        // Published versions and keys are never rewritten; the same bytes again are fine (a retried push).
        if ((await readFile(file)).equals(body.bytes!)) {
          await rm(tmp, { force: true });
          sendJson(req, res, 200, { ok: true, path: segments.join('/'), created: false, existed: true });
          return;
        }
        throw target.kind === 'manifest'
          ? new HttpError(409, 'version-exists', `${target.name}@${target.version} is already published with other bytes; published versions are never rewritten: publish a new version`)
          : new HttpError(409, 'key-exists', `keys/${target.id}.pub exists with other content`);
      }
      await verifyMetadata(target, body.bytes!, options.rootReal);
    }
    await rename(tmp, file);
    renamed = true;
    await syncDir(dir);
  } catch (err) {
    if (!renamed) await rm(tmp, { force: true }).catch(() => {});
    if (err instanceof HttpError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EROFS' || code === 'EACCES' || code === 'EIO') throw storageError(err as NodeJS.ErrnoException, req);
    throw err;
  }
  sendJson(req, res, existing ? 200 : 201, { ok: true, path: segments.join('/'), created: !existing });
}

function storageError(err: NodeJS.ErrnoException, req: IncomingMessage): HttpError {
  if (err.code === 'ENOSPC' || err.code === 'EDQUOT') return refuse(req, 507, 'storage-full', 'the server is out of disk space');
  return refuse(req, 500, 'storage-error', `cannot store the upload (${err.code ?? 'I/O error'})`);
}

async function drain(req: IncomingMessage, limit: number): Promise<void> {
  let total = 0;
  for await (const chunk of req) {
    total += (chunk as Buffer).length;
    if (total > limit) throw refuse(req, 413, 'too-large', `body exceeds the ${limit}-byte limit`);
  }
}

/** Stream the body into `tmp` (fsynced), counting and hashing; keep it in memory too when `keep`. */
async function receive(req: IncomingMessage, tmp: string, limit: number, keep: boolean): Promise<{ length: number; sha256: string; bytes?: Buffer }> {
  // The directory may have just been removed as empty by a concurrent refused upload.
  const handle = await open(tmp, 'wx', 0o644).catch(async (err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
    await mkdir(dirname(tmp), { recursive: true });
    return open(tmp, 'wx', 0o644);
  });
  const hash = createHash('sha256');
  const parts: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of req) {
      const data = chunk as Buffer;
      length += data.length;
      if (length > limit) throw refuse(req, 413, 'too-large', `body exceeds the ${limit}-byte limit`);
      hash.update(data);
      if (keep) parts.push(data);
      let written = 0;
      while (written < data.length) written += (await handle.write(data, written, data.length - written)).bytesWritten;
    }
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) !== length) throw new HttpError(400, 'incomplete-body', `received ${length} of ${declared} bytes`);
    await handle.datasync();
  } finally {
    await handle.close();
  }
  return { length, sha256: hash.digest('hex'), ...(keep ? { bytes: Buffer.concat(parts) } : {}) };
}

/**
 * An object is stored raw or as one zstd frame, and its id is the SHA-256 of
 * the uncompressed content (docs/format.md "Objects"). Raw: the body hashes to
 * the id. zstd: the body decompresses (streamed, capped) to content that hashes
 * to the id and is longer than the body; otherwise readers, which tell the two
 * apart by "stored length == content length means raw", could not read it.
 */
async function verifyObject(id: string, tmp: string, bodySha256: string, bodyLength: number, maxContent: number): Promise<void> {
  if (bodySha256 === id) return;
  const head = await readHead(tmp, 4);
  if (bodyLength < 4 || !head.equals(ZSTD_MAGIC)) {
    throw new HttpError(422, 'object-invalid', `body is neither a zstd frame nor raw content with id ${id} (it hashes to ${bodySha256})`);
  }
  // Capped at what the frame header declares (else the server's limit), decoded
  // in fixed steps from the file: a zstd bomb costs CPU time, never memory.
  const declared = declaredContentSize(await readHead(tmp, 18));
  const cap = Math.min(declared ?? maxContent, maxContent);
  if (declared !== undefined && declared > maxContent) {
    throw new HttpError(422, 'object-invalid', `zstd frame declares ${declared} bytes of content, more than this server's ${maxContent}-byte limit`);
  }
  const hash = createHash('sha256');
  const decoded = await inflateStreaming(createReadStream(tmp, { highWaterMark: 64 * 1024 }), cap, (piece) => hash.update(piece));
  if (!decoded.ok) {
    const why = decoded.reason === 'too-long' ? `${decoded.detail}${declared !== undefined ? ' (what its header declares)' : ' (this server\'s limit)'}` : `does not decode: ${decoded.detail}`;
    throw new HttpError(422, 'object-invalid', `body starts like a zstd frame but ${why}; as raw bytes it hashes to ${bodySha256}, not ${id}`);
  }
  if (declared !== undefined && decoded.length !== declared) throw new HttpError(422, 'object-invalid', `zstd frame declares ${declared} bytes but holds ${decoded.length}`);
  const length = decoded.length;
  const actual = hash.digest('hex');
  if (actual !== id) throw new HttpError(422, 'object-invalid', `content hashes to ${actual}, not to the id ${id} it was uploaded under`);
  if (length <= bodyLength) {
    throw new HttpError(422, 'object-invalid', `zstd frame is ${bodyLength} bytes for ${length} bytes of content; store it raw (readers take stored length >= content length to mean raw)`);
  }
}

async function readHead(file: string, bytes: number): Promise<Buffer> {
  const head = Buffer.alloc(bytes);
  const handle = await open(file, 'r');
  try {
    const { bytesRead } = await handle.read(head, 0, bytes, 0);
    return head.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

async function verifyMetadata(target: UploadTarget, bytes: Buffer, root: string): Promise<void> {
  const data = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
  try {
    switch (target.kind) {
      case 'manifest': {
        const origin = `manifests/${target.name}/${target.version}.json`;
        const opened = await openEnvelope(nodeCodecs, data, { origin });
        const manifest = parseManifest(opened.payload, origin);
        if (manifest.name !== target.name || manifest.version !== target.version) {
          throw new HostmeError('upload-invalid', `the manifest is ${manifest.name}@${manifest.version} but was uploaded as ${target.name}@${target.version}`);
        }
        for (const { label, ref } of manifestBlobs(manifest)) {
          const found = await stat(join(root, objectPath(ref.index))).catch(() => null);
          if (!found?.isFile()) throw new HostmeError('upload-invalid', `the index object ${ref.index} of its ${label} is not here: upload objects before the manifest`);
        }
        const pinned = await publisherKeys(root);
        if (!pinned.includes(opened.signer.keyId)) {
          throw new HttpError(409, 'publisher-key-not-pinned', `the manifest is signed by key ${opened.signer.keyId}, which is not one of this repository's publisher keys (keys/*.pub); the operator adds a publisher by copying its key into REPO/keys/`);
        }
        return;
      }
      case 'key': {
        const key = parsePublicKeyLine(new TextDecoder('utf-8', { fatal: true }).decode(data), `keys/${target.id}.pub`);
        if (key.keyId !== target.id) throw new HostmeError('upload-invalid', `this public key has id ${key.keyId}, not ${target.id}`);
        // The first key makes a new repository's publisher; later ones only the operator adds (on disk).
        const pinned = await publisherKeys(root);
        if (pinned.length > 0) {
          throw new HttpError(409, 'publisher-key-not-pinned', `this repository is published with key(s) ${pinned.map((k) => k.slice(0, 16)).join(', ')}; a new publisher key is added by the operator (copy it into REPO/keys/), not by an upload`);
        }
        return;
      }
      case 'marker': {
        const marker = parseJson(data) as { format?: unknown; formatVersion?: unknown } | null;
        if (marker?.format !== 'hostme-repo' || marker.formatVersion !== REPO_FORMAT_VERSION) {
          throw new HostmeError('upload-invalid', `expected {"format": "hostme-repo", "formatVersion": ${REPO_FORMAT_VERSION}}`);
        }
        return;
      }
      case 'listing':
        await verifyListing(parseJson(data) as RepoListing | null, root);
        return;
      default:
        throw new HostmeError('upload-invalid', `unexpected upload kind ${target.kind}`);
    }
  } catch (err) {
    if (err instanceof HttpError) throw err;
    throw new HttpError(422, target.kind === 'manifest' ? 'manifest-invalid' : 'invalid', errorMessage(err));
  }
}

async function publisherKeys(root: string): Promise<string[]> {
  const files = await readdir(join(root, 'keys')).catch(() => [] as string[]);
  return files.filter((f) => /^[0-9a-f]{64}\.pub$/.test(f)).map((f) => f.slice(0, -4));
}

function parseJson(data: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(data));
  } catch (err) {
    throw new HostmeError('upload-invalid', `not valid JSON (${errorMessage(err)})`);
  }
}

/** index.json goes last: every version it lists must already be here, with the digest it claims. */
async function verifyListing(listing: RepoListing | null, root: string): Promise<void> {
  if (listing?.format !== 'hostme-repo' || listing.formatVersion !== REPO_FORMAT_VERSION || typeof listing.images !== 'object' || listing.images === null) {
    throw new HostmeError('upload-invalid', `not a hostme repository listing (format "hostme-repo", formatVersion ${REPO_FORMAT_VERSION})`);
  }
  for (const [name, image] of Object.entries(listing.images)) {
    if (!imageNamePattern.test(name) || !Array.isArray(image?.versions)) throw new HostmeError('upload-invalid', `image "${name}": malformed entry`);
    if (!image.versions.some((v) => v?.version === image.latest)) throw new HostmeError('upload-invalid', `image "${name}": latest version "${image.latest}" is not among its versions`);
    for (const entry of image.versions) {
      if (typeof entry?.version !== 'string' || !versionPattern.test(entry.version)) throw new HostmeError('upload-invalid', `image "${name}": malformed version entry`);
      const path = `manifests/${name}/${entry.version}.json`;
      const bytes = await readFile(join(root, path)).catch(() => null);
      if (!bytes) throw new HostmeError('upload-invalid', `${path} is not here: upload manifests before index.json`);
      if (sha256Hex(bytes) !== entry.digest) throw new HostmeError('upload-invalid', `${path} has digest ${sha256Hex(bytes)}, the listing says ${entry.digest}`);
    }
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r').catch(() => null);
  if (!handle) return;
  await handle.sync().catch(() => {});
  await handle.close().catch(() => {});
}
