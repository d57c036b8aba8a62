import { connect, constants, type ClientHttp2Session } from 'node:http2';
import type { Duplex } from 'node:stream';
import { SESSION_WINDOW_BYTES, STATUS_PATH, STREAM_WINDOW_BYTES, nodeIdOf, type NodeStatus } from './tunnel-protocol.js';

const STATUS_EVERY_MS = 1000;
const STATUS_TIMEOUT_MS = 3000;
/** Consecutive failed requests or status polls after which a node is ejected. */
const MAX_FAILURES = 3;

/** A token bucket: requests per second the hub sends one node (protects the visitor's machine). */
class RateLimit {
  private tokens: number;
  private last = performance.now();
  constructor(private readonly perSecond: number, private readonly burst: number) {
    this.tokens = burst;
  }
  take(): boolean {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.perSecond);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/**
 * One authenticated node connected through its tunnel: the hub's HTTP/2
 * client session over the node's socket, the sites it may answer for, and
 * what the hub knows of its health and load.
 */
export class NodeSession {
  readonly id: string;
  readonly h2: ClientHttp2Session;
  /** Sites this node was allowed to host at connect time (never grows). */
  readonly sites: ReadonlySet<string>;
  /** Of those, the ones whose VM the node reports as serving. */
  ready = new Set<string>();
  inflight = 0;
  served = 0;
  failures = 0;
  closed = false;
  readonly connectedAt = Date.now();
  private readonly limit: RateLimit;
  private readonly timer: NodeJS.Timeout;

  constructor(readonly keyText: string, sites: string[], socket: Duplex, options: { ratePerSecond: number; onClose: (s: NodeSession) => void }) {
    this.id = nodeIdOf(keyText);
    this.sites = new Set(sites);
    this.limit = new RateLimit(options.ratePerSecond, options.ratePerSecond * 2);
    this.h2 = connect('http://hostme-node', {
      createConnection: () => socket,
      // Bounded: a node cannot make the hub buffer unbounded headers.
      maxHeaderListPairs: 256,
      maxSessionMemory: 64,
      settings: { initialWindowSize: STREAM_WINDOW_BYTES },
    });
    this.h2.once('connect', () => this.h2.setLocalWindowSize(SESSION_WINDOW_BYTES));
    const close = () => {
      if (this.closed) return;
      this.closed = true;
      clearInterval(this.timer);
      this.ready.clear();
      // A GOAWAY or error leaves the socket open: close it, so the node notices and dials again.
      this.h2.destroy();
      options.onClose(this);
    };
    this.h2.on('close', close);
    this.h2.on('error', close);
    this.h2.on('goaway', close);
    socket.on('close', close);
    this.timer = setInterval(() => void this.poll(), STATUS_EVERY_MS);
    this.timer.unref();
    void this.poll();
  }

  /** May this node take one more request now? */
  admit(): boolean {
    return !this.closed && this.limit.take();
  }

  succeeded(): void {
    this.failures = 0;
    this.served++;
  }

  failed(): void {
    if (++this.failures >= MAX_FAILURES) this.eject();
  }

  eject(): void {
    if (this.closed) return;
    this.h2.destroy();
  }

  /** Status poll: the health check and the node's list of serving sites. */
  private async poll(): Promise<void> {
    if (this.closed) return;
    try {
      const status = await new Promise<NodeStatus>((resolve, reject) => {
        const stream = this.h2.request({ ':method': 'GET', ':path': STATUS_PATH });
        stream.setTimeout(STATUS_TIMEOUT_MS, () => stream.close(constants.NGHTTP2_CANCEL));
        let body = '';
        stream.setEncoding('utf8');
        stream.on('response', (headers) => {
          if (headers[':status'] !== 200) reject(new Error(`status ${headers[':status']}`));
        });
        stream.on('data', (d: string) => {
          body += d;
          if (body.length > 65536) stream.close(constants.NGHTTP2_CANCEL);
        });
        stream.on('end', () => {
          try {
            resolve(JSON.parse(body) as NodeStatus);
          } catch (err) {
            reject(err as Error);
          }
        });
        stream.on('close', () => reject(new Error('status stream closed')));
        stream.on('error', reject);
      });
      // A node cannot announce sites it was not admitted for.
      this.ready = new Set((Array.isArray(status.ready) ? status.ready : []).filter((s) => typeof s === 'string' && this.sites.has(s)));
      this.failures = 0;
    } catch {
      this.ready.clear();
      this.failed();
    }
  }
}
