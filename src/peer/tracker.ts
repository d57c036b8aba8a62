import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isPrivateIp, normalizeIp, sameSubnet } from './address.js';
import { IMAGE_KEY } from './names.js';

/**
 * The hub as a tracker (docs/peers.md "Tracker API"): which peers currently
 * share an image, LAN peers first. A peer's address is the address its
 * announce came from, never one it claims, so the tracker cannot be used to
 * point runners at third parties; only its port is claimed.
 */
export interface TrackerOptions {
  /** Whether NAME is an image the hub serves (announces for others are refused). */
  imageExists: (name: string) => Promise<boolean>;
  /** false: invite-only hosting, no public swarm: every tracker route answers 403. */
  publicSwarm: boolean;
  /** Whether one image may have a public swarm (its manifest's hosting policy); default: every image the hub serves. */
  imagePublic?: (name: string) => Promise<boolean>;
  /** Seconds between heartbeats a peer is asked for (default 30); a peer expires after 3 missed. */
  intervalSeconds?: number;
  /** Peers tracked at once (default 10,000). */
  maxPeers?: number;
  log?: (line: string) => void;
}

interface PeerEntry {
  token: string;
  address: string;
  port: number;
  images: Set<string>;
  expires: number;
  /** Distinct addresses that reported it for wrong bytes. */
  reportedBy: Set<string>;
}

/** NAME@VERSION with the manifest's own name and version rules. */
export { IMAGE_KEY } from './names.js';
const MAX_BODY = 4096;
const MAX_IMAGES_PER_PEER = 16;
const MAX_PORTS_PER_ADDRESS = 16;
const MAX_ANSWER = 32;
/** Reports from this many distinct addresses hide a peer from everyone (one from the asker hides it from that asker). */
const BAN_REPORTS = 2;

class TrackerError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

export class Tracker {
  private readonly peers = new Map<string, PeerEntry>();
  private readonly intervalMs: number;
  private readonly maxPeers: number;
  /** Requests per address in the current second (announce/report flood bound). */
  private readonly rate = new Map<string, number>();
  private rateWindow = 0;

  constructor(private readonly opts: TrackerOptions) {
    this.intervalMs = (opts.intervalSeconds ?? 30) * 1000;
    this.maxPeers = opts.maxPeers ?? 10_000;
  }

  /** Handles /api/peers*; false: not a tracker route. */
  handle(req: IncomingMessage, res: ServerResponse): boolean {
    const url = new URL(req.url ?? '/', 'http://tracker');
    if (!url.pathname.startsWith('/api/peers')) return false;
    void this.route(req, url)
      .then((body) => send(res, 200, body))
      .catch((err: unknown) => {
        if (err instanceof TrackerError) send(res, err.status, { error: err.code, message: err.message });
        else send(res, 500, { error: 'tracker-error', message: 'internal error' });
      });
    return true;
  }

  /** Live peers of an image for an asker at `asker`, LAN first. */
  lookup(image: string, askerRaw: string | undefined): Array<{ address: string; port: number; lan: boolean }> {
    const asker = normalizeIp(askerRaw);
    this.expire();
    const lan: PeerEntry[] = [];
    const wan: PeerEntry[] = [];
    for (const p of this.peers.values()) {
      if (!p.images.has(image) || p.reportedBy.size >= BAN_REPORTS || (asker && p.reportedBy.has(asker))) continue;
      const local = asker !== undefined && sameSubnet(asker, p.address);
      if (local) lan.push(p);
      // A private address means nothing (or something else) off its own LAN.
      else if (!isPrivateIp(p.address)) wan.push(p);
    }
    return [...shuffle(lan).map((p) => ({ p, lan: true })), ...shuffle(wan).map((p) => ({ p, lan: false }))]
      .slice(0, MAX_ANSWER)
      .map(({ p, lan: l }) => ({ address: p.address, port: p.port, lan: l }));
  }

  get size(): number {
    return this.peers.size;
  }

  private async route(req: IncomingMessage, url: URL): Promise<unknown> {
    if (!this.opts.publicSwarm) throw new TrackerError(403, 'no-public-swarm', 'this hub is invite-only: its images have no public swarm');
    const from = normalizeIp(req.socket.remoteAddress);
    if (!from) throw new TrackerError(400, 'bad-address', 'unknown client address');
    if (url.pathname === '/api/peers' && req.method === 'GET') {
      const image = url.searchParams.get('image') ?? '';
      if (!IMAGE_KEY.test(image)) throw new TrackerError(400, 'bad-image', 'image must be NAME@VERSION');
      await this.refusePrivate(image);
      return { image, interval: this.intervalMs / 1000, peers: this.lookup(image, from) };
    }
    if (req.method !== 'POST') throw new TrackerError(405, 'method', 'use GET /api/peers or POST /api/peers/announce|report');
    this.limit(from);
    const body = await readJson(req);
    if (url.pathname === '/api/peers/announce') return this.announce(from, body);
    if (url.pathname === '/api/peers/report') return this.report(from, body);
    throw new TrackerError(404, 'not-found', 'no such tracker route');
  }

  /** An invite-only image (its manifest says `hosting: invite`) has no public swarm, even on an open hub. */
  private async refusePrivate(image: string): Promise<void> {
    const name = image.split('@')[0]!;
    if (this.opts.imagePublic && !(await this.opts.imagePublic(name))) throw new TrackerError(403, 'no-public-swarm', `${name} is invite-only: it has no public swarm`);
  }

  private async announce(address: string, body: Record<string, unknown>): Promise<unknown> {
    const port = body.port;
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw new TrackerError(400, 'bad-port', 'port must be 1..65535');
    const images = body.images;
    if (!Array.isArray(images) || images.length > MAX_IMAGES_PER_PEER || !images.every((i): i is string => typeof i === 'string' && IMAGE_KEY.test(i))) {
      throw new TrackerError(400, 'bad-image', `images must be up to ${MAX_IMAGES_PER_PEER} NAME@VERSION strings`);
    }
    for (const image of images) {
      if (!(await this.opts.imageExists(image.split('@')[0]!))) throw new TrackerError(404, 'unknown-image', `this hub serves no image named ${image.split('@')[0]}`);
      await this.refusePrivate(image);
    }
    const key = `${address}|${port}`;
    const existing = this.peers.get(key);
    if (images.length === 0) {
      // Leaving: only the holder of the token may remove the entry.
      if (existing && body.token === existing.token) this.peers.delete(key);
      return { left: true };
    }
    this.expire();
    if (!existing) {
      if (this.peers.size >= this.maxPeers) throw new TrackerError(503, 'tracker-full', 'the tracker is full; try again later');
      if ([...this.peers.values()].filter((p) => p.address === address).length >= MAX_PORTS_PER_ADDRESS) throw new TrackerError(429, 'too-many-ports', `at most ${MAX_PORTS_PER_ADDRESS} peers per address`);
    }
    const entry: PeerEntry = existing ?? { token: randomBytes(16).toString('base64url'), address, port, images: new Set(), expires: 0, reportedBy: new Set() };
    entry.images = new Set(images);
    entry.expires = Date.now() + 3 * this.intervalMs;
    if (!existing) {
      this.peers.set(key, entry);
      this.opts.log?.(`tracker: peer ${address}:${port} shares ${images.join(', ')}`);
    }
    return { token: entry.token, address, interval: this.intervalMs / 1000 };
  }

  private report(from: string, body: Record<string, unknown>): unknown {
    const address = normalizeIp(typeof body.address === 'string' ? body.address : undefined);
    const port = body.port;
    if (!address || typeof port !== 'number') throw new TrackerError(400, 'bad-report', 'report needs address and port');
    const entry = this.peers.get(`${address}|${port}`);
    if (!entry) return { known: false };
    entry.reportedBy.add(from);
    this.opts.log?.(`tracker: peer ${address}:${port} reported by ${from} (${String(body.reason ?? 'wrong bytes').slice(0, 200)})`);
    return { known: true, hidden: entry.reportedBy.size >= BAN_REPORTS ? 'everyone' : 'reporter' };
  }

  private expire(): void {
    const now = Date.now();
    for (const [key, p] of this.peers) if (p.expires < now) this.peers.delete(key);
  }

  private limit(address: string): void {
    const second = Math.floor(Date.now() / 1000);
    if (second !== this.rateWindow) {
      this.rate.clear();
      this.rateWindow = second;
    }
    const n = (this.rate.get(address) ?? 0) + 1;
    if (this.rate.size < 100_000) this.rate.set(address, n);
    if (n > 20) throw new TrackerError(429, 'rate-limited', 'too many tracker requests from this address');
  }
}

function shuffle<T>(list: T[]): T[] {
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [list[i], list[j]] = [list[j]!, list[i]!];
  }
  return list;
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new TrackerError(413, 'too-large', `tracker requests are limited to ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  try {
    const value: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new TrackerError(400, 'bad-json', 'the body must be a JSON object');
}

function send(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
  res.end(body);
}
