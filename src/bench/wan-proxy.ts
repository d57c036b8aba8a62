/**
 * An emulated WAN link for benchmarks: a TCP proxy on 127.0.0.1 that forwards
 * to an origin on loopback, adds a one-way delay to every data chunk in each
 * direction (RTT = 2 × delay, order preserved) and paces the downstream
 * (origin → client) direction through one shared token bucket, like a single
 * access link. It counts bytes in both directions and connections.
 *
 * Backpressure: a side stops reading while more than `maxQueuedBytes` are in
 * flight on the emulated link, so a bulk download never piles up in memory.
 */
import net from 'node:net';

export interface WanProxyOptions {
  /** Origin port on 127.0.0.1. */
  targetPort: number;
  /** Round-trip time added, in ms (half in each direction). Default 100. */
  rttMs?: number;
  /** Downstream rate in Mbit/s (10^6 bit/s). Default 50. 0 = unlimited. */
  downMbit?: number;
  /** Upstream rate in Mbit/s. Default unlimited. */
  upMbit?: number;
  /** Token bucket depth in bytes (burst). Default 16 KiB. */
  burstBytes?: number;
  /** Close by itself after this long (safety net). Default 15 min. */
  lifetimeMs?: number;
  /** Listen on this port (a stable URL across runs, like a real site); default any free port. */
  port?: number;
}

export interface WanCounters {
  bytesDown: number;
  bytesUp: number;
  connections: number;
  /** HTTP/1.x request lines seen upstream (a heuristic: a request line at the start of a data chunk). */
  requests: number;
}

/** A token bucket shared by every connection in one direction. */
class TokenBucket {
  private tokens: number;
  private last = performance.now();
  constructor(
    private readonly bytesPerMs: number,
    private readonly depth: number,
  ) {
    this.tokens = depth;
  }
  /** Reserve `bytes`; returns the time (performance.now) when they have left the link. */
  reserve(bytes: number): number {
    const now = performance.now();
    if (!Number.isFinite(this.bytesPerMs) || this.bytesPerMs <= 0) return now;
    this.tokens = Math.min(this.depth, this.tokens + (now - this.last) * this.bytesPerMs);
    this.last = now;
    this.tokens -= bytes;
    // Negative tokens: the bytes wait until the bucket has refilled to zero.
    return this.tokens >= 0 ? now : now + -this.tokens / this.bytesPerMs;
  }
}

const SLICE = 16 * 1024;

/** One direction of one connection: chunks leave in order at their due time. */
class DelayLine {
  private readonly queue: Array<{ due: number; data: Buffer }> = [];
  private timer: NodeJS.Timeout | undefined;
  private queued = 0;
  private ended = false;
  constructor(
    private readonly from: net.Socket,
    private readonly to: net.Socket,
    private readonly delayMs: number,
    private readonly bucket: TokenBucket | undefined,
    private readonly maxQueued: number,
    private readonly count: (n: number) => void,
  ) {
    from.on('data', (data: Buffer) => this.push(data));
    from.on('end', () => {
      this.ended = true;
      this.schedule();
    });
  }

  private push(data: Buffer): void {
    for (let at = 0; at < data.length; at += SLICE) {
      const slice = data.subarray(at, Math.min(data.length, at + SLICE));
      const left = this.bucket ? this.bucket.reserve(slice.length) : performance.now();
      const last = this.queue.at(-1)?.due ?? 0;
      this.queue.push({ due: Math.max(last, left + this.delayMs), data: slice });
      this.queued += slice.length;
    }
    if (this.queued > this.maxQueued) this.from.pause();
    this.schedule();
  }

  private schedule(): void {
    if (this.timer) return;
    const head = this.queue[0];
    if (!head) {
      if (this.ended && !this.to.destroyed) this.to.end();
      return;
    }
    const wait = Math.max(0, head.due - performance.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, wait);
  }

  private flush(): void {
    const now = performance.now();
    while (this.queue.length && this.queue[0]!.due <= now + 0.5) {
      const { data } = this.queue.shift()!;
      this.queued -= data.length;
      this.count(data.length);
      if (!this.to.destroyed) this.to.write(data);
    }
    if (this.queued <= this.maxQueued / 2 && this.from.isPaused()) this.from.resume();
    this.schedule();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
  }
}

export class WanProxy {
  readonly counters: WanCounters = { bytesDown: 0, bytesUp: 0, connections: 0, requests: 0 };
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private readonly lines = new Set<DelayLine>();
  private readonly down: TokenBucket | undefined;
  private readonly up: TokenBucket | undefined;
  private lifetime: NodeJS.Timeout | undefined;
  private closed = false;
  port = 0;

  constructor(readonly options: WanProxyOptions) {
    const burst = options.burstBytes ?? 16 * 1024;
    const down = options.downMbit ?? 50;
    const up = options.upMbit ?? 0;
    this.down = down > 0 ? new TokenBucket((down * 1e6) / 8 / 1000, burst) : undefined;
    this.up = up > 0 ? new TokenBucket((up * 1e6) / 8 / 1000, burst) : undefined;
    this.server = net.createServer({ allowHalfOpen: true }, (client) => this.accept(client));
  }

  get rttMs(): number {
    return this.options.rttMs ?? 100;
  }

  /** Reset the counters (between measured runs). */
  reset(): WanCounters {
    const before = { ...this.counters };
    this.counters.bytesDown = 0;
    this.counters.bytesUp = 0;
    this.counters.connections = 0;
    this.counters.requests = 0;
    return before;
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port ?? 0, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.address() as net.AddressInfo).port;
    this.lifetime = setTimeout(() => void this.close(), this.options.lifetimeMs ?? 15 * 60_000);
    this.lifetime.unref();
    return this.port;
  }

  private accept(client: net.Socket): void {
    if (this.closed) return void client.destroy();
    this.counters.connections++;
    const origin = net.connect({ host: '127.0.0.1', port: this.options.targetPort, allowHalfOpen: true });
    client.setNoDelay(true);
    origin.setNoDelay(true);
    const oneWay = this.rttMs / 2;
    const maxQueued = 1 << 20;
    client.on('data', (data: Buffer) => {
      const head = data.subarray(0, 16).toString('latin1');
      if (/^(GET|HEAD|PUT|POST|OPTIONS|DELETE) \//.test(head)) this.counters.requests++;
    });
    const upLine = new DelayLine(client, origin, oneWay, this.up, maxQueued, (n) => (this.counters.bytesUp += n));
    const downLine = new DelayLine(origin, client, oneWay, this.down, maxQueued, (n) => (this.counters.bytesDown += n));
    for (const line of [upLine, downLine]) this.lines.add(line);
    for (const s of [client, origin]) this.sockets.add(s);
    let done = false;
    const teardown = () => {
      if (done) return;
      done = true;
      // Let in-flight data drain only if the peer is still open; a reset tears both down.
      for (const line of [upLine, downLine]) {
        line.stop();
        this.lines.delete(line);
      }
      for (const s of [client, origin]) {
        s.destroy();
        this.sockets.delete(s);
      }
    };
    // A socket is finished when both of its directions are done ('close').
    client.on('close', teardown);
    origin.on('close', () => {
      // The origin closed: the client gets what is still in flight, then FIN (DelayLine 'end').
      this.sockets.delete(origin);
    });
    client.on('error', teardown);
    origin.on('error', teardown);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.lifetime) clearTimeout(this.lifetime);
    for (const line of this.lines) line.stop();
    this.lines.clear();
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Start a proxy to 127.0.0.1:targetPort; returns it listening. */
export async function startWanProxy(options: WanProxyOptions): Promise<WanProxy> {
  const proxy = new WanProxy(options);
  await proxy.listen();
  return proxy;
}
