import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HostmeError } from '../errors.js';
import { imageNamePattern, versionPattern } from '../format/manifest.js';
import { normalizeIp } from './address.js';
import type { ShareCatalog } from './catalog.js';

export interface PeerServerOptions {
  /** Address to listen on (default 0.0.0.0: other machines of the LAN are the point). */
  host?: string;
  port?: number;
  /** Requests answered at once; beyond, 503 (default 32). */
  maxConcurrent?: number;
  /** Requests per second per client address, burst twice that; beyond, 429 (default 400). */
  ratePerSecond?: number;
  log?: (line: string) => void;
}

/** GET /objects/ab/<64 hex> and GET /manifests/<name>/<version>: the whole surface. */
const OBJECT_PATH = /^\/objects\/([0-9a-f]{2})\/([0-9a-f]{64})$/;
const MANIFEST_PATH = /^\/manifests\/([^/]+)\/([^/]+)$/;
const MAX_CLIENTS_TRACKED = 10_000;
/** Requests held for an object in flight here (`?wait=`), beyond the concurrency bound (they hold no disk read). */
const MAX_WAITING = 256;
const WAIT_QUERY = /^wait=(\d{1,5})$/;

/**
 * A peer's object server (docs/peers.md "Peer HTTP protocol"): read-only,
 * only what the catalog shares, ids validated, per-client rate limit and a
 * bound on concurrent requests. The layout matches a repository's objects/
 * so any HTTP mirror client can read it.
 */
export class PeerHttpServer {
  readonly server: Server;
  private inflight = 0;
  private waiting = 0;
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  readonly stats = { objects: 0, bytes: 0, refused: 0, missing: 0, waited: 0 };

  constructor(
    private readonly catalog: ShareCatalog,
    private readonly opts: PeerServerOptions = {},
  ) {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 60_000;
    this.server.maxHeadersCount = 32;
    this.server.keepAliveTimeout = 30_000;
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', (err) => reject(new HostmeError('peer-listen', `cannot share on ${this.opts.host ?? '0.0.0.0'}:${this.opts.port ?? 0}: ${err.message}`)));
      this.server.listen(this.opts.port ?? 0, this.opts.host ?? '0.0.0.0', () => resolve());
    });
    return (this.server.address() as AddressInfo).port;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') return this.reply(res, 405, 'read-only: GET only');
    if (!this.admit(normalizeIp(req.socket.remoteAddress) ?? '?')) return this.reply(res, 429, 'rate limit', { 'Retry-After': '1' });
    if (this.inflight >= (this.opts.maxConcurrent ?? 32)) return this.reply(res, 503, 'busy', { 'Retry-After': '1' });
    this.inflight++;
    try {
      const [path = '', query = ''] = (req.url ?? '').split('?', 2);
      const object = OBJECT_PATH.exec(path);
      const manifest = MANIFEST_PATH.exec(path);
      let body: Uint8Array | null = null;
      if (object && object[2]!.startsWith(object[1]!)) {
        body = await this.catalog.object(object[2]!);
        const wait = Number(WAIT_QUERY.exec(query)?.[1] ?? 0);
        if (!body && wait > 0 && this.waiting < MAX_WAITING) body = await this.held(() => this.catalog.object(object[2]!, wait));
      } else if (manifest && imageNamePattern.test(manifest[1]!) && versionPattern.test(manifest[2]!)) body = await this.catalog.manifest(manifest[1]!, manifest[2]!);
      else return this.reply(res, 404, 'not found');
      if (!body) {
        this.stats.missing++;
        return this.reply(res, 404, 'not shared here');
      }
      this.stats.objects++;
      this.stats.bytes += body.length;
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length, 'Cache-Control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    } catch {
      this.reply(res, 500, 'read failed');
    } finally {
      this.inflight--;
    }
  }

  /** Runs a wait for an object in flight outside the concurrency bound (counted in `waiting` instead). */
  private async held(wait: () => Promise<Uint8Array | null>): Promise<Uint8Array | null> {
    this.inflight--;
    this.waiting++;
    this.stats.waited++;
    try {
      return await wait();
    } finally {
      this.waiting--;
      this.inflight++;
    }
  }

  /** Token bucket per client address. */
  private admit(client: string): boolean {
    const rate = this.opts.ratePerSecond ?? 400;
    const now = Date.now();
    let bucket = this.buckets.get(client);
    if (!bucket) {
      if (this.buckets.size >= MAX_CLIENTS_TRACKED) this.buckets.clear();
      bucket = { tokens: rate * 2, at: now };
      this.buckets.set(client, bucket);
    }
    bucket.tokens = Math.min(rate * 2, bucket.tokens + ((now - bucket.at) / 1000) * rate);
    bucket.at = now;
    if (bucket.tokens < 1) {
      this.stats.refused++;
      return false;
    }
    bucket.tokens--;
    return true;
  }

  private reply(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
    res.writeHead(status, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(text), ...headers });
    res.end(text);
  }
}
