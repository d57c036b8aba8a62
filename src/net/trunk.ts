/**
 * Trunks: a switch on another machine joins a hub's network over one
 * WebSocket per network (works through NAT and HTTP proxies; wss when the
 * hub is https):
 *
 *   GET /net/NETWORK/trunk?token=TOKEN   (Upgrade: websocket)
 *
 * Binary messages are Ethernet frames, unchanged. Text messages are JSON
 * control, because the hub owns the network's leases (addresses must be
 * unique across switches):
 *
 *   hub → switch  {"type":"hello","subnet":"100.x.y.0/24","leases":[Lease…]}
 *   hub → switch  {"type":"leases","leases":[Lease…]}       (after any change)
 *   switch → hub  {"type":"lease","instance":"…","mac":<48-bit int>,"site"?:"…"}
 *
 * The dialing switch keeps a copy of the leases (DNS for every guest of the
 * network, and addresses that survive a hub outage) and dials again with
 * backoff when the hub goes away.
 */
import { WebSocket } from 'ws';
import { HostmeError } from '../errors.js';
import { formatSubnet, type Lease } from './registry.js';
import type { NetSwitch, SwitchPort } from './switch.js';

export interface TrunkOptions {
  network: string;
  /** The hub: its http(s):// or ws(s):// base URL (hostme serve --net). */
  hub: string;
  token: string;
  log?: (line: string) => void;
}

const MAX_CONTROL_MESSAGE = 1 << 20;

export function trunkUrl(hub: string, network: string, token: string): string {
  let base: URL;
  try {
    base = new URL(hub);
  } catch {
    throw new HostmeError('usage', `hub ${hub}: not a URL (expected http(s)://host[:port])`);
  }
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(base.protocol)) throw new HostmeError('usage', `hub ${hub}: use an http(s):// or ws(s):// URL`);
  const scheme = base.protocol === 'https:' || base.protocol === 'wss:' ? 'wss:' : 'ws:';
  return `${scheme}//${base.host}${base.pathname.replace(/\/+$/, '')}/net/${network}/trunk?token=${encodeURIComponent(token)}`;
}

export class Trunk {
  private ws?: WebSocket;
  private port?: SwitchPort;
  private closed = false;
  private backoffMs = 500;
  private firstHello: Promise<void>;
  private settleFirst!: (err?: Error) => void;
  connected = false;

  constructor(
    private readonly sw: NetSwitch,
    readonly options: TrunkOptions,
  ) {
    this.firstHello = new Promise<void>((resolve, reject) => {
      this.settleFirst = (err) => (err ? reject(err) : resolve());
    });
    this.firstHello.catch(() => {});
    this.dial();
  }

  /** Resolves after the hub's first hello; rejects if the first attempt is refused or times out. */
  ready(timeoutMs = 15_000): Promise<void> {
    let timer: NodeJS.Timeout;
    return Promise.race([
      this.firstHello.finally(() => clearTimeout(timer)),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new HostmeError('net-hub-unreachable', `the hub ${this.options.hub} did not answer within ${timeoutMs / 1000} s`, { hub: this.options.hub })), timeoutMs);
      }),
    ]);
  }

  private dial(): void {
    if (this.closed) return;
    const ws = new WebSocket(trunkUrl(this.options.hub, this.options.network, this.options.token), { maxPayload: MAX_CONTROL_MESSAGE, perMessageDeflate: false });
    this.ws = ws;
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body = (body + d.toString()).slice(0, 2000)));
      res.on('end', () => {
        let message = `the hub refused the trunk (HTTP ${res.statusCode})`;
        try {
          message = (JSON.parse(body) as { error: { message: string } }).error.message;
        } catch {
          // not our JSON
        }
        this.settleFirst(new HostmeError(res.statusCode === 401 ? 'net-token' : 'net-hub-refused', message, { hub: this.options.hub }));
        this.options.log?.(`trunk ${this.options.network}: ${message}`);
        ws.terminate(); // 'close' follows, which dials again (the token may be issued meanwhile)
      });
    });
    ws.on('open', () => {
      this.backoffMs = 500;
      this.connected = true;
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) this.port?.receive(data);
      else this.onControl(data.toString('utf8'));
    });
    ws.on('error', () => {});
    ws.on('close', () => {
      this.connected = false;
      this.port?.detach();
      this.port = undefined;
      if (this.ws === ws) this.retry();
    });
  }

  private retry(): void {
    if (this.closed) return;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, 5000);
    setTimeout(() => this.dial(), delay).unref();
  }

  private onControl(text: string): void {
    let message: { type?: string; subnet?: string; leases?: Lease[] };
    try {
      message = JSON.parse(text) as typeof message;
    } catch {
      return;
    }
    if (message.type === 'hello' && typeof message.subnet === 'string') {
      let network;
      try {
        network = this.sw.network(this.options.network, message.subnet);
      } catch (err) {
        // This machine already uses the name or the subnet differently: say so, do not join.
        this.settleFirst(err as Error);
        this.close();
        return;
      }
      network.upstream = { requestLease: (instance, mac, site) => this.send({ type: 'lease', instance, mac, ...(site ? { site } : {}) }) };
      network.adoptLeases(Array.isArray(message.leases) ? message.leases : []);
      const ws = this.ws!;
      this.port?.detach();
      this.port = this.sw.attach(this.options.network, {
        kind: 'trunk',
        send: (frame) => {
          if (ws.readyState === WebSocket.OPEN && ws.bufferedAmount < 4 << 20) ws.send(frame);
        },
      });
      network.requestPendingLeases();
      this.options.log?.(`trunk ${this.options.network} to ${this.options.hub} up (${formatSubnet(this.sw.registry.subnet(this.options.network))})`);
      this.settleFirst();
    } else if (message.type === 'leases' && Array.isArray(message.leases)) {
      this.sw.network(this.options.network).adoptLeases(message.leases);
    }
  }

  private send(message: unknown): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  close(): void {
    this.closed = true;
    this.ws?.terminate();
    this.port?.detach();
  }
}
