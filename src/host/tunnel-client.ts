import { createServer as createH2Server, constants, type Http2ServerRequest, type Http2ServerResponse, type Http2Server } from 'node:http2';
import { Agent, request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect as netConnect, type Socket } from 'node:net';
import type { KeyObject } from 'node:crypto';
import { HostmeError, errorMessage } from '../errors.js';
import { SESSION_WINDOW_BYTES, STREAM_WINDOW_BYTES, CHALLENGE_PATH, NODE_HEADER, RETRY_HEADER, SITE_HEADER, STATUS_PATH, TUNNEL_PATH, TUNNEL_PROTOCOL, nodeIdOf, nodeKeyText, signTunnelRequest, type NodeStatus, type SiteClaim } from '../hub/tunnel-protocol.js';

/** What the tunnel needs from the node: where each site's VM answers. */
export interface TunnelTarget {
  /** The loopback port of a serving site this tunnel may forward to, or undefined. */
  portOf(site: string): number | undefined;
  ready(): string[];
  counted(site: string): void;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'host', 'http2-settings']);
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30_000;

/**
 * The node's side of one hub's tunnel: dials out, authenticates, then serves
 * HTTP/2 on the upgraded socket, forwarding each request to the site's VM.
 * Reconnects with backoff; a changed site list re-dials (claims are signed
 * at connect time).
 */
export class TunnelClient {
  private socket?: Socket;
  private claimsKey = '';
  private closed = false;
  private backoffMs = BACKOFF_MIN_MS;
  private timer?: NodeJS.Timeout;
  private connecting = false;
  private readonly aborter = new AbortController();
  private inflight = 0;
  /** Sites the hub admitted on the current connection. */
  admitted: string[] = [];
  connected = false;
  lastError?: string;
  private readonly h2: Http2Server;
  /** Keep-alive connections to the VMs (a guest server that closes each connection just gets new ones). */
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 64, maxFreeSockets: 16 });
  readonly nodeId: string;

  constructor(
    readonly hub: string,
    private readonly key: { privateKey: KeyObject; publicKey: KeyObject },
    private readonly target: TunnelTarget,
    private readonly log: (line: string) => void,
  ) {
    this.nodeId = nodeIdOf(nodeKeyText(key.publicKey));
    // Extended CONNECT (RFC 8441) carries upgraded connections (WebSocket) to the VM.
    this.h2 = createH2Server({ maxSessionMemory: 64, settings: { enableConnectProtocol: true, initialWindowSize: STREAM_WINDOW_BYTES } }, (req, res) => this.serve(req, res));
    this.h2.on('session', (session) => {
      session.once('connect', () => session.setLocalWindowSize(SESSION_WINDOW_BYTES));
      // A session that ends (GOAWAY, error) must not leave a half-dead tunnel that looks connected.
      session.once('goaway', () => session.destroy());
      session.once('close', () => session.destroy());
    });
    this.h2.on('connect', (req: Http2ServerRequest, res: Http2ServerResponse) => this.serveUpgrade(req, res));
    this.h2.on('sessionError', () => {});
  }

  /** Sets the sites to claim; re-dials when they changed. */
  update(claims: SiteClaim[]): void {
    const key = JSON.stringify(claims);
    if (key === this.claimsKey && (this.socket || this.connecting)) return;
    this.claimsKey = key;
    this.socket?.destroy();
    if (!this.connecting) this.dial(0);
  }

  close(): void {
    this.closed = true;
    // A login in progress must not keep the process alive after SIGTERM.
    this.aborter.abort();
    clearTimeout(this.timer);
    this.socket?.destroy();
    this.h2.close();
    this.agent.destroy();
  }

  private dial(delayMs: number): void {
    clearTimeout(this.timer);
    if (this.closed) return;
    this.connecting = true;
    this.timer = setTimeout(() => {
      void this.connect().then(
        () => {
          this.backoffMs = BACKOFF_MIN_MS;
        },
        (err: unknown) => {
          this.connecting = false;
          this.lastError = errorMessage(err);
          this.log(`tunnel ${this.hub}: ${this.lastError}; retrying in ${(this.backoffMs / 1000).toFixed(1)} s`);
          const wait = this.backoffMs;
          this.backoffMs = Math.min(BACKOFF_MAX_MS, this.backoffMs * 2);
          this.dial(wait);
        },
      );
    }, delayMs);
  }

  private async connect(): Promise<void> {
    const claims = JSON.parse(this.claimsKey || '[]') as SiteClaim[];
    const challenge = await fetch(new URL(CHALLENGE_PATH, this.hub), { signal: AbortSignal.any([AbortSignal.timeout(10_000), this.aborter.signal]) });
    if (!challenge.ok) throw new HostmeError('tunnel-refused', `challenge: HTTP ${challenge.status}`, { status: challenge.status });
    const { nonce } = (await challenge.json()) as { nonce: string };
    const headers = signTunnelRequest(this.key.privateKey, this.key.publicKey, nonce, claims);
    const url = new URL(TUNNEL_PATH, this.hub);
    const { socket, admitted } = await new Promise<{ socket: Socket; admitted: string[] }>((resolve, reject) => {
      const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, { headers: { ...headers, Connection: 'Upgrade', Upgrade: TUNNEL_PROTOCOL }, timeout: 10_000, signal: this.aborter.signal });
      req.on('upgrade', (res: IncomingMessage, sock: Socket, head: Buffer) => {
        if (head.length) sock.unshift(head);
        const list = String(res.headers['x-hostme-admitted'] ?? '');
        resolve({ socket: sock, admitted: list ? list.split(',') : [] });
      });
      req.on('response', (res: IncomingMessage) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body = (body + d).slice(0, 2000)));
        res.on('end', () => reject(new Error(`the hub refused the tunnel: HTTP ${res.statusCode} ${body}`)));
      });
      req.on('timeout', () => req.destroy(new Error('timed out connecting to the hub')));
      req.on('error', reject);
      req.end();
    });
    this.connecting = false;
    this.socket = socket;
    this.admitted = admitted;
    this.connected = true;
    this.lastError = undefined;
    const refused = claims.filter((c) => !admitted.includes(c.site)).map((c) => c.site);
    this.log(`tunnel ${this.hub}: connected as ${this.nodeId}, hosting ${admitted.join(', ') || 'nothing'}${refused.length ? `; the hub refused ${refused.join(', ')}` : ''}`);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 10_000);
    socket.on('close', () => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      this.connected = false;
      this.admitted = [];
      if (!this.closed) {
        this.log(`tunnel ${this.hub}: disconnected; reconnecting`);
        this.dial(this.backoffMs);
        this.backoffMs = Math.min(BACKOFF_MAX_MS, this.backoffMs * 2);
      }
    });
    socket.on('error', () => {});
    this.h2.emit('connection', socket);
  }

  /** The port a gateway request may go to, or undefined (then the hub is told to try another node). */
  private portFor(req: Http2ServerRequest): number | undefined {
    const site = req.headers[SITE_HEADER];
    return typeof site === 'string' && this.admitted.includes(site) ? this.target.portOf(site) : undefined;
  }

  /**
   * An upgraded request (WebSocket): replay it to the VM as HTTP/1.1 with its
   * Upgrade header, then relay raw bytes both ways; the VM's own 101 answer
   * reaches the client through the hub unchanged.
   */
  private serveUpgrade(req: Http2ServerRequest, res: Http2ServerResponse): void {
    const port = this.portFor(req);
    const protocol = String(req.headers[':protocol'] ?? '');
    const path = String(req.headers[':path'] ?? '');
    if (port === undefined || !/^[A-Za-z0-9._-]{1,64}$/.test(protocol) || !path.startsWith('/')) {
      res.writeHead(port === undefined ? 503 : 400, { [RETRY_HEADER]: port === undefined ? '1' : '0', [NODE_HEADER]: this.nodeId });
      res.end();
      return;
    }
    this.target.counted(String(req.headers[SITE_HEADER]));
    const lines = [`GET ${path} HTTP/1.1`, `Host: ${String(req.headers[':authority'] ?? 'localhost')}`, 'Connection: Upgrade', `Upgrade: ${protocol}`];
    for (const [name, value] of Object.entries(req.headers)) {
      if (name.startsWith(':') || value === undefined || HOP_BY_HOP.has(name) || name === SITE_HEADER) continue;
      for (const v of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${v}`);
    }
    const vm = netConnect(port, '127.0.0.1');
    const stream = req.stream;
    vm.on('connect', () => {
      res.writeHead(200, { [NODE_HEADER]: this.nodeId });
      vm.write(`${lines.join('\r\n')}\r\n\r\n`);
      vm.pipe(stream);
      stream.pipe(vm);
    });
    vm.on('error', () => {
      if (!res.headersSent) {
        res.writeHead(503, { [RETRY_HEADER]: '1', [NODE_HEADER]: this.nodeId });
        res.end();
      } else {
        stream.close(constants.NGHTTP2_CONNECT_ERROR);
      }
    });
    stream.on('close', () => vm.destroy());
    stream.on('error', () => vm.destroy());
  }

  private serve(req: Http2ServerRequest, res: Http2ServerResponse): void {
    const site = req.headers[SITE_HEADER];
    if (site === undefined && req.url === STATUS_PATH) {
      const status: NodeStatus = { ready: this.target.ready().filter((s) => this.admitted.includes(s)), inflight: this.inflight };
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(status));
      return;
    }
    const port = typeof site === 'string' && this.admitted.includes(site) ? this.target.portOf(site) : undefined;
    if (port === undefined || typeof site !== 'string') {
      res.writeHead(503, { [RETRY_HEADER]: '1', [NODE_HEADER]: this.nodeId, 'content-type': 'text/plain' });
      res.end('this node is not serving that site right now\n');
      return;
    }
    this.target.counted(site);
    this.inflight++;
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (name.startsWith(':') || value === undefined || HOP_BY_HOP.has(name)) continue;
      headers[name] = value;
    }
    headers.host = String(req.headers[':authority'] ?? site);
    const upstream = httpRequest({ agent: this.agent, host: '127.0.0.1', port, method: req.method, path: req.url, headers, timeout: 120_000 }, (vmRes) => {
      const out: Record<string, string | string[]> = {};
      for (const [name, value] of Object.entries(vmRes.headers)) {
        if (value === undefined || HOP_BY_HOP.has(name)) continue;
        out[name] = value;
      }
      out[NODE_HEADER] = this.nodeId;
      try {
        res.writeHead(vmRes.statusCode ?? 502, out);
      } catch {
        res.stream.close(constants.NGHTTP2_INTERNAL_ERROR);
        vmRes.destroy();
        return;
      }
      vmRes.pipe(res);
    });
    const done = () => {
      this.inflight--;
    };
    res.on('close', () => {
      done();
      upstream.destroy();
    });
    upstream.on('timeout', () => upstream.destroy(new Error('the VM did not answer in time')));
    upstream.on('error', () => {
      if (!res.headersSent) {
        // The VM went away under the request: the hub may retry on another node.
        res.writeHead(503, { [RETRY_HEADER]: '1', [NODE_HEADER]: this.nodeId });
        res.end();
      } else {
        res.stream.close(constants.NGHTTP2_INTERNAL_ERROR);
      }
    });
    req.pipe(upstream);
  }
}
