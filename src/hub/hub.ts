import { randomBytes } from 'node:crypto';
import { constants, type IncomingHttpHeaders as H2Headers } from 'node:http2';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { HostmeError, errorMessage, isHostmeError } from '../errors.js';
import { escapeHtml } from '../server/http-util.js';
import { NodeSession } from './node-session.js';
import { CHALLENGE_PATH, NODE_HEADER, RETRY_HEADER, SITE_HEADER, SITE_NAME, TUNNEL_PATH, TUNNEL_PROTOCOL, verifyTunnelRequest, type SiteClaim } from './tunnel-protocol.js';
import type { HubStore } from './hub-store.js';
import { INSTALL_PATH, PACKAGE_PATH, handleInstaller } from './installer.js';
import { Tracker } from '../peer/tracker.js';
import { SignalServer } from '../peer/signal-server.js';

export type HostingPolicy = 'open' | 'invite';

/**
 * `--fallback`: the hub's own node (src/hub/fallback.ts), asked to boot a
 * site when no visitor hosts it. It logs in through the tunnel like any
 * node; its key is admitted for every existing site whatever the policy,
 * and it is chosen only when no other node is ready.
 */
export interface HubFallback {
  readonly keyText: string;
  /** Boot the site (idempotent, returns at once). */
  start(site: string): void;
}

export interface HubOptions {
  /** Which site names exist (the images of the served repository). */
  siteExists: (site: string) => Promise<boolean>;
  store: HubStore;
  /** Default 'open': any node may host any site; 'invite': a node needs a valid invite token for the site. */
  hosting?: HostingPolicy;
  /**
   * The site's own policy (its image manifest's `hosting`); the stricter of
   * it and `hosting` applies. A site whose policy cannot be read is hosted
   * by invitation only (fail closed).
   */
  sitePolicy?: (site: string) => Promise<HostingPolicy | undefined>;
  /** SITE.DOMAIN in the Host header routes to SITE (besides /s/SITE/). */
  domain?: string;
  /** Largest request body forwarded (default 16 MiB). */
  maxRequestBytes?: number;
  /** Largest response body forwarded (default 256 MiB). */
  maxResponseBytes?: number;
  /** Gateway requests in flight at once (default 512); beyond: 503. */
  maxInflight?: number;
  /** Requests per second sent to one node (default 500, burst twice that). */
  nodeRatePerSecond?: number;
  /** Nodes connected at once (default 1000). */
  maxNodes?: number;
  log?: (line: string) => void;
  /** The hostme package (npm pack output) served at /hostme.tgz for /install.sh. */
  packageFile?: string;
  /** Public origin used in /install.sh (default: from the Host header). */
  publicUrl?: string;
  /** Seconds between a peer's announces to the tracker (default 30); docs/peers.md. */
  peerIntervalSeconds?: number;
  fallback?: HubFallback;
  /** How long a request waits for the fallback to boot a site before 503 (default 30 s). */
  fallbackWaitMs?: number;
}

const NONCE_TTL_MS = 30_000;
/** Response bytes held back before the gateway commits to one node's answer. */
const COMMIT_BYTES = 64 * 1024;
const MAX_NONCES = 10_000;
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);
/** Hop-by-hop and HTTP/2-forbidden headers (RFC 9110 §7.6.1, RFC 9113 §8.2.2). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'proxy-authorization', 'proxy-authenticate', 'host', 'http2-settings']);

class GatewayError extends Error {
  constructor(readonly status: number, message: string, readonly page?: string) {
    super(message);
  }
}

/**
 * The hub: a registry of connected nodes (by the sites they may host) and the
 * public gateway that sends each /s/SITE/… request down one live node's
 * tunnel. Wired into `hostme serve --hub` through handleRequest/handleUpgrade.
 */
export class Hub {
  private readonly nonces = new Map<string, number>();
  private readonly nodes = new Map<string, NodeSession>();
  private inflight = 0;
  private upgrades = 0;
  private rr = 0;
  private readonly opts: Required<Omit<HubOptions, 'domain' | 'log' | 'packageFile' | 'publicUrl' | 'peerIntervalSeconds' | 'sitePolicy' | 'fallback'>> & Pick<HubOptions, 'domain' | 'log' | 'packageFile' | 'publicUrl' | 'peerIntervalSeconds' | 'sitePolicy' | 'fallback'>;
  /** GET /api/peers, POST /api/peers/announce|report: peers sharing images (no public swarm with invite hosting). */
  readonly tracker: Tracker;
  /** WebSocket /api/peers/signal: WebRTC signaling between members of an image's swarm. */
  readonly signals: SignalServer;

  constructor(options: HubOptions) {
    this.opts = {
      hosting: 'open',
      maxRequestBytes: 16 << 20,
      maxResponseBytes: 256 << 20,
      maxInflight: 512,
      nodeRatePerSecond: 500,
      maxNodes: 1000,
      fallbackWaitMs: 30_000,
      ...options,
    };
    const imagePublic = async (name: string) => (await this.policyOf(name)) === 'open';
    this.tracker = new Tracker({ imageExists: options.siteExists, publicSwarm: this.opts.hosting === 'open', imagePublic, intervalSeconds: options.peerIntervalSeconds, log: options.log });
    this.signals = new SignalServer({ imageExists: options.siteExists, publicSwarm: this.opts.hosting === 'open', imagePublic, log: options.log });
  }

  /** Whether NAME has a public swarm here (open hosting, an open image): the run page joins it only then. */
  async publicSwarm(name: string): Promise<boolean> {
    return this.opts.hosting === 'open' && (await this.opts.siteExists(name)) && (await this.policyOf(name)) === 'open';
  }

  /** Live nodes, for /api/hub/nodes and tests. */
  nodeList(): Array<{ id: string; sites: string[]; ready: string[]; inflight: number; served: number; since: string; fallback: boolean }> {
    return [...this.nodes.values()].map((n) => ({ id: n.id, sites: [...n.sites], ready: [...n.ready], inflight: n.inflight, served: n.served, since: new Date(n.connectedAt).toISOString(), fallback: n.keyText === this.opts.fallback?.keyText }));
  }

  close(): void {
    for (const node of this.nodes.values()) node.eject();
    this.signals.close();
  }

  /** Handles the hub's own routes and gateway requests; false: not ours. */
  handleRequest(req: IncomingMessage, res: ServerResponse): boolean {
    const target = this.gatewayTarget(req);
    const url = req.url ?? '/';
    if (target) {
      void this.proxy(req, res, target.site, target.path);
      return true;
    }
    if (url.startsWith(INSTALL_PATH) || url.startsWith(PACKAGE_PATH)) {
      const host = /^[A-Za-z0-9.:[\]-]{1,255}$/.test(req.headers.host ?? '') ? req.headers.host! : 'localhost';
      const origin = this.opts.publicUrl ?? `http://${host}`;
      void handleInstaller(req, res, origin, this.opts.packageFile).then(
        (handled) => {
          if (!handled) this.sendError(req, res, new GatewayError(404, 'this hub serves no package (hostme serve --hub --package FILE.tgz)'));
        },
        () => this.sendError(req, res, new GatewayError(500, 'cannot read the package')),
      );
      return true;
    }
    if (url === CHALLENGE_PATH && req.method === 'GET') {
      this.sendJson(res, 200, { nonce: this.newNonce(), protocol: TUNNEL_PROTOCOL });
      return true;
    }
    if (url === '/api/hub/nodes' && req.method === 'GET') {
      this.sendJson(res, 200, { nodes: this.nodeList() });
      return true;
    }
    return this.tracker.handle(req, res);
  }

  /** The tunnel: an authenticated node's connection becomes an HTTP/2 session. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    if ((req.url ?? '') !== TUNNEL_PATH) {
      if (this.signals.handleUpgrade(req, socket, head)) return true;
      const target = this.gatewayTarget(req);
      if (!target) return false;
      void this.proxyUpgrade(req, socket, head, target.site, target.path);
      return true;
    }
    void this.acceptTunnel(req, socket, head).catch((err: unknown) => {
      const status = isHostmeError(err) && err.code === 'tunnel-auth' ? 401 : isHostmeError(err) && err.code === 'tunnel-refused' ? 403 : 503;
      const body = JSON.stringify({ error: isHostmeError(err) ? err.code : 'tunnel-error', message: errorMessage(err) });
      socket.end(`HTTP/1.1 ${status} Refused\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      this.opts.log?.(`hub: tunnel refused (${errorMessage(err)})`);
    });
    return true;
  }

  private async acceptTunnel(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    if ((req.headers.upgrade ?? '').toLowerCase() !== TUNNEL_PROTOCOL) throw new HostmeError('tunnel-refused', `Upgrade must be ${TUNNEL_PROTOCOL}`);
    const { keyText, nonce, claims } = verifyTunnelRequest(req.headers);
    const issued = this.nonces.get(nonce);
    this.nonces.delete(nonce);
    if (issued === undefined || Date.now() - issued > NONCE_TTL_MS) throw new HostmeError('tunnel-auth', 'unknown or expired nonce (get a fresh one from /api/hub/challenge)');
    const allowed = await this.admitClaims(keyText, claims);
    if (this.nodes.size >= this.opts.maxNodes && !this.nodes.has(keyText)) throw new HostmeError('tunnel-busy', 'the hub has too many nodes connected');
    // The newest connection of a key replaces an older one (a restarted node).
    this.nodes.get(keyText)?.eject();
    this.opts.store.nodeSeen(keyText, allowed);
    // Many small HTTP/2 frames each way: Nagle's algorithm against delayed ACKs would stall each request ~40 ms.
    if ('setNoDelay' in socket && typeof socket.setNoDelay === 'function') (socket as Socket).setNoDelay(true);
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${TUNNEL_PROTOCOL}\r\nx-hostme-admitted: ${allowed.join(',')}\r\n\r\n`);
    if (head.length) socket.unshift(head);
    const session = new NodeSession(keyText, allowed, socket, {
      ratePerSecond: this.opts.nodeRatePerSecond,
      onClose: (s) => {
        if (this.nodes.get(keyText) === s) this.nodes.delete(keyText);
        this.opts.log?.(`hub: node ${s.id} disconnected`);
      },
    });
    this.nodes.set(keyText, session);
    this.opts.log?.(`hub: node ${session.id} connected for ${allowed.join(', ') || 'no sites'}`);
  }

  /** The claimed sites this node may host: existing sites, and where hosting is by invitation only with a valid token. */
  private async admitClaims(keyText: string, claims: SiteClaim[]): Promise<string[]> {
    const allowed: string[] = [];
    for (const claim of claims) {
      if (!(await this.opts.siteExists(claim.site))) continue;
      if (keyText === this.opts.fallback?.keyText) {
        allowed.push(claim.site);
        continue;
      }
      if ((await this.policyOf(claim.site)) === 'invite' && !(claim.invite && this.opts.store.inviteValid(claim.site, claim.invite, keyText))) continue;
      allowed.push(claim.site);
    }
    return allowed;
  }

  /** The stricter of the hub's policy and the site's own (its manifest). */
  private async policyOf(site: string): Promise<HostingPolicy> {
    if (this.opts.hosting === 'invite' || !this.opts.sitePolicy) return this.opts.hosting;
    try {
      return (await this.opts.sitePolicy(site)) ?? this.opts.hosting;
    } catch (err) {
      this.opts.log?.(`hub: cannot read the hosting policy of ${site} (${errorMessage(err)}); invitation only`);
      return 'invite';
    }
  }

  private newNonce(): string {
    const now = Date.now();
    if (this.nonces.size >= MAX_NONCES) {
      for (const [nonce, issued] of this.nonces) if (now - issued > NONCE_TTL_MS) this.nonces.delete(nonce);
      // Still full: drop the oldest (a flood of challenges only hurts pending logins, never memory).
      while (this.nonces.size >= MAX_NONCES) this.nonces.delete(this.nonces.keys().next().value!);
    }
    const nonce = randomBytes(24).toString('base64url');
    this.nonces.set(nonce, now);
    return nonce;
  }

  /** /s/SITE/rest or Host: SITE.DOMAIN → the site and the path to send to its VM. */
  private gatewayTarget(req: IncomingMessage): { site: string; path: string } | undefined {
    const url = req.url ?? '/';
    const host = (req.headers.host ?? '').toLowerCase().replace(/:\d+$/, '');
    const domain = this.opts.domain?.toLowerCase();
    if (domain && host.endsWith(`.${domain}`)) {
      const site = host.slice(0, -domain.length - 1);
      return { site, path: url.startsWith('/') ? url : '/' };
    }
    const m = /^\/s\/([^/?#]*)(.*)$/s.exec(url);
    if (!m) return undefined;
    const rest = m[2] ?? '';
    return { site: m[1]!, path: rest.startsWith('/') ? rest : `/${rest}` };
  }

  /**
   * A WebSocket (any Upgrade) to a site: an extended CONNECT stream (RFC 8441)
   * down one node's tunnel; the node replays the upgrade to the VM and bytes
   * flow raw both ways. Retried on another node until one accepts.
   */
  private async proxyUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, site: string, path: string): Promise<void> {
    const refuse = (status: number, text: string) => void socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    socket.on('error', () => socket.destroy());
    const protocol = String(req.headers.upgrade ?? '').toLowerCase();
    if (!/^[a-z0-9._-]{1,64}$/.test(protocol)) return refuse(400, 'Bad Request');
    if (!SITE_NAME.test(site) || !(await this.opts.siteExists(site))) return refuse(404, 'Not Found');
    if (this.upgrades >= this.opts.maxInflight) return refuse(503, 'Service Unavailable');
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value === undefined || HOP_BY_HOP.has(name) || name.startsWith('x-hostme-')) continue;
      headers[name] = value;
    }
    const tried = new Set<NodeSession>();
    for (;;) {
      const node = this.pick(site, tried);
      if (!node) return refuse(503, 'Service Unavailable');
      tried.add(node);
      const stream = (() => {
        try {
          return node.h2.request({ ...headers, ':method': 'CONNECT', ':protocol': protocol, ':scheme': 'http', ':path': path, ':authority': site, [SITE_HEADER]: site, 'x-forwarded-for': req.socket.remoteAddress ?? '' }, { endStream: false });
        } catch {
          return undefined;
        }
      })();
      if (!stream) continue;
      const status = await new Promise<number>((resolve) => {
        stream.once('response', (h: H2Headers) => resolve(Number(h[':status'] ?? 502)));
        stream.once('error', () => resolve(0));
        stream.once('close', () => resolve(0));
      });
      if (status !== 200) {
        if (!stream.closed) stream.close(constants.NGHTTP2_CANCEL);
        continue;
      }
      this.upgrades++;
      stream.once('close', () => this.upgrades--);
      if (head.length) stream.write(head);
      stream.pipe(socket);
      socket.pipe(stream);
      const end = () => {
        if (!stream.closed) stream.close(constants.NGHTTP2_CANCEL);
        socket.destroy();
      };
      stream.on('close', end);
      stream.on('error', end);
      socket.on('close', end);
      return;
    }
  }

  private pick(site: string, tried: Set<NodeSession>): NodeSession | undefined {
    const ready = [...this.nodes.values()].filter((n) => !n.closed && n.ready.has(site) && !tried.has(n));
    // The hub's own fallback serves only while no visitor's node can.
    const visitors = ready.filter((n) => n.keyText !== this.opts.fallback?.keyText);
    const live = visitors.length ? visitors : ready;
    if (live.length === 0) return undefined;
    // Least loaded first; equal load takes turns.
    const start = this.rr++ % live.length;
    const rotated = [...live.slice(start), ...live.slice(0, start)];
    rotated.sort((a, b) => a.inflight + a.failures * 4 - (b.inflight + b.failures * 4));
    return rotated.find((n) => n.admit());
  }

  private async proxy(req: IncomingMessage, res: ServerResponse, site: string, path: string): Promise<void> {
    this.inflight++;
    res.on('close', () => this.inflight--);
    try {
      if (this.inflight > this.opts.maxInflight) throw new GatewayError(503, 'the gateway is busy; try again');
      if (!SITE_NAME.test(site) || !(await this.opts.siteExists(site))) throw new GatewayError(404, `no site named "${site.slice(0, 64)}"`);
      const declared = Number(req.headers['content-length'] ?? 0);
      if (!Number.isFinite(declared) || declared > this.opts.maxRequestBytes) throw new GatewayError(413, `request bodies are limited to ${this.opts.maxRequestBytes} bytes`);
      const method = req.method ?? 'GET';
      const hasBody = declared > 0 || req.headers['transfer-encoding'] !== undefined;
      // Idempotent requests without a body can be replayed on another node.
      const retryable = IDEMPOTENT.has(method) && !hasBody;
      const tried = new Set<NodeSession>();
      let fallbackAsked = false;
      for (;;) {
        const node = this.pick(site, tried);
        if (!node) {
          if ([...this.nodes.values()].some((n) => n.ready.has(site) && !tried.has(n))) throw new GatewayError(429, 'the hosts of this site are at their request rate limit; try again');
          if (this.opts.fallback && !fallbackAsked && retryable) {
            fallbackAsked = true;
            this.opts.fallback.start(site);
            if (await this.waitForHost(site, tried, res)) continue;
            throw new GatewayError(503, `${site} is starting on the hub; try again in a few seconds`, site);
          }
          throw new GatewayError(503, `no host of "${site}" is online`, site);
        }
        tried.add(node);
        const outcome = await this.forward(req, res, node, site, path, method, hasBody);
        if (outcome === 'done') return;
        if (!retryable) throw new GatewayError(502, 'the host failed while handling the request');
      }
    } catch (err) {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (err instanceof GatewayError) this.sendError(req, res, err);
      else this.sendError(req, res, new GatewayError(502, errorMessage(err)));
    }
  }

  /** Waits (bounded, while the client stays) until a node not yet tried reports the site ready. */
  private async waitForHost(site: string, tried: Set<NodeSession>, res: ServerResponse): Promise<boolean> {
    const deadline = Date.now() + this.opts.fallbackWaitMs;
    while (Date.now() < deadline && !res.destroyed) {
      if ([...this.nodes.values()].some((n) => !n.closed && n.ready.has(site) && !tried.has(n))) return true;
      await new Promise((r) => setTimeout(r, 200));
    }
    return false;
  }

  /** One attempt on one node: 'done' once a response started, 'retry' if the node could not answer. */
  private forward(req: IncomingMessage, res: ServerResponse, node: NodeSession, site: string, path: string, method: string, hasBody: boolean): Promise<'done' | 'retry'> {
    return new Promise((resolve) => {
      const headers: Record<string, string | string[]> = {};
      for (const [name, value] of Object.entries(req.headers)) {
        if (value === undefined || HOP_BY_HOP.has(name) || name.startsWith('x-hostme-')) continue;
        headers[name] = value;
      }
      headers[':method'] = method;
      headers[':path'] = path;
      headers[':authority'] = site;
      headers[SITE_HEADER] = site;
      headers['x-forwarded-for'] = req.socket.remoteAddress ?? '';
      headers['x-forwarded-host'] = req.headers.host ?? '';
      let stream;
      try {
        stream = node.h2.request(headers, { endStream: !hasBody });
      } catch {
        node.failed();
        resolve('retry');
        return;
      }
      node.inflight++;
      let settled = false;
      let responded = false;
      const finish = (result: 'done' | 'retry') => {
        if (settled) return;
        settled = true;
        node.inflight--;
        resolve(result);
      };
      res.on('close', () => {
        // Only a client that left before the answer ended cancels the stream. Cancelling streams
        // already answered sent one RST_STREAM per request: past ~1,000 of them Node's HTTP/2
        // server (the node) takes it for a rapid-reset attack and closes the whole tunnel.
        if (!stream.closed && !stream.readableEnded) stream.close(constants.NGHTTP2_CANCEL);
      });
      if (hasBody) {
        let received = 0;
        req.on('data', (chunk: Buffer) => {
          received += chunk.length;
          if (received > this.opts.maxRequestBytes) {
            stream.close(constants.NGHTTP2_CANCEL);
            if (!res.headersSent) this.sendError(req, res, new GatewayError(413, `request bodies are limited to ${this.opts.maxRequestBytes} bytes`));
            req.destroy();
          }
        });
        req.pipe(stream);
      }
      stream.on('response', (h: H2Headers) => {
        const status = Number(h[':status'] ?? 502);
        if (h[RETRY_HEADER] === '1') {
          // The node has the site but its VM is not serving: another node may be.
          stream.close(constants.NGHTTP2_CANCEL);
          node.ready.delete(site);
          finish('retry');
          return;
        }
        const out: Record<string, string | string[]> = {};
        for (const [name, value] of Object.entries(h)) {
          if (name.startsWith(':') || value === undefined || HOP_BY_HOP.has(name)) continue;
          out[name] = value as string | string[];
        }
        out[NODE_HEADER] = node.id;
        // The response is held back until it is complete or larger than
        // COMMIT_BYTES: a node dying mid-response before then is retried
        // elsewhere, so small idempotent responses survive a node's death.
        const held: Buffer[] = [];
        let heldBytes = 0;
        let sent = 0;
        const commit = () => {
          if (responded) return;
          responded = true;
          res.writeHead(status, out);
          for (const chunk of held.splice(0)) res.write(chunk);
        };
        stream.on('data', (chunk: Buffer) => {
          sent += chunk.length;
          if (sent > this.opts.maxResponseBytes) {
            stream.close(constants.NGHTTP2_CANCEL);
            res.destroy();
            return;
          }
          if (responded) {
            if (!res.write(chunk)) {
              stream.pause();
              res.once('drain', () => stream.resume());
            }
            return;
          }
          held.push(chunk);
          heldBytes += chunk.length;
          if (heldBytes > COMMIT_BYTES) commit();
        });
        stream.on('end', () => {
          if (!responded) {
            // The whole answer was held: head and body leave in one write.
            responded = true;
            res.writeHead(status, out);
            res.end(held.length === 1 ? held[0] : Buffer.concat(held));
          } else {
            res.end();
          }
          node.succeeded();
          finish('done');
        });
      });
      const broken = () => {
        if (settled) return;
        if (responded) {
          res.destroy();
          finish('done');
          return;
        }
        node.failed();
        finish('retry');
      };
      stream.on('error', broken);
      stream.on('close', broken);
      stream.setTimeout(120_000, () => stream.close(constants.NGHTTP2_CANCEL));
    });
  }

  private sendJson(res: ServerResponse, status: number, value: unknown): void {
    const body = JSON.stringify(value);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
    res.end(body);
  }

  private sendError(req: IncomingMessage, res: ServerResponse, err: GatewayError): void {
    const site = err.page;
    const html =
      site !== undefined && this.opts.fallback
        ? `<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5"><title>${escapeHtml(site)} is starting</title></head><body><h1>${escapeHtml(site)} is starting</h1><p>No visitor is hosting this site right now, so the hub is starting it itself. This page reloads in a few seconds.</p><p><a class="hostme-button" href="/i/${encodeURIComponent(site)}">Host this site on my computer</a> (HostMe)</p></body></html>`
        : site !== undefined
        ? `<!doctype html><html><head><meta charset="utf-8"><title>${escapeHtml(site)} is offline</title></head><body><h1>No one is hosting ${escapeHtml(site)} right now</h1><p>This site is served by its visitors' computers, and none of them is online.</p><p><a class="hostme-button" href="/i/${encodeURIComponent(site)}">Host this site on my computer</a> (HostMe)</p></body></html>`
        : `<!doctype html><html><head><meta charset="utf-8"><title>${err.status}</title></head><body><h1>${err.status}</h1><p>${escapeHtml(err.message)}</p></body></html>`;
    res.writeHead(err.status, {
      'Content-Type': 'text/html; charset=utf-8',
      'Content-Length': Buffer.byteLength(html),
      'Cache-Control': 'no-store',
      'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'",
      ...(err.status === 503 || err.status === 429 ? { 'Retry-After': '5' } : {}),
      ...(req.headers['content-length'] || req.headers['transfer-encoding'] ? { Connection: 'close' } : {}),
    });
    res.end(req.method === 'HEAD' ? undefined : html);
  }
}
