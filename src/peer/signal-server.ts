import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { normalizeIp, sameSubnet } from './address.js';
import { IMAGE_KEY, SIGNAL_PATH } from './names.js';

export { SIGNAL_PATH };

export interface SignalServerOptions {
  imageExists: (name: string) => Promise<boolean>;
  /** false (invite-only hosting): no public swarm, every connection is refused. */
  publicSwarm: boolean;
  /** Whether one image may have a public swarm (its manifest's hosting policy); default: every image the hub serves. */
  imagePublic?: (name: string) => Promise<boolean>;
  /** Members of one image's swarm at once (default 256). */
  maxPerImage?: number;
  /** Connections at once, all images (default 4096). */
  maxConnections?: number;
  /** One line per report of a member that served wrong bytes. */
  log?: (line: string) => void;
}

interface Member {
  id: string;
  ws: WebSocket;
  address: string;
  tokens: number;
  at: number;
  /** Distinct addresses that reported this member for wrong bytes. */
  reportedBy: Set<string>;
}

const MAX_MESSAGE = 16 * 1024;
const RATE = 50;
const LISTED = 16;

/**
 * WebRTC signaling for an image's swarm (docs/peers.md "Signaling"): a
 * WebSocket per member at /api/peers/signal?image=NAME@VERSION. The hub only
 * introduces members (random ids, LAN first) and relays bounded JSON between
 * two members of the same swarm; it never reads or trusts what they say.
 */
export class SignalServer {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE });
  private readonly swarms = new Map<string, Map<string, Member>>();
  private connections = 0;

  constructor(private readonly opts: SignalServerOptions) {}

  /** Takes /api/peers/signal upgrades; false: not ours. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    const url = new URL(req.url ?? '/', 'http://hub');
    if (url.pathname !== SIGNAL_PATH) return false;
    const refuse = (status: number, text: string) => void socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    const image = url.searchParams.get('image') ?? '';
    const address = normalizeIp(req.socket.remoteAddress);
    if (!this.opts.publicSwarm) return (refuse(403, 'No Public Swarm'), true);
    if (!IMAGE_KEY.test(image) || !address) return (refuse(400, 'Bad Request'), true);
    if (this.connections >= (this.opts.maxConnections ?? 4096) || (this.swarms.get(image)?.size ?? 0) >= (this.opts.maxPerImage ?? 256)) return (refuse(503, 'Busy'), true);
    const name = image.split('@')[0]!;
    void Promise.all([this.opts.imageExists(name), this.opts.imagePublic?.(name) ?? true]).then(
      ([exists, open]) => {
        if (!exists) return refuse(404, 'Not Found');
        if (!open) return refuse(403, 'No Public Swarm');
        this.wss.handleUpgrade(req, socket, head, (ws) => this.join(ws, image, address));
      },
      () => refuse(500, 'Error'),
    );
    return true;
  }

  close(): void {
    for (const swarm of this.swarms.values()) for (const m of swarm.values()) m.ws.terminate();
    this.wss.close();
  }

  private join(ws: WebSocket, image: string, address: string): void {
    this.connections++;
    const swarm = this.swarms.get(image) ?? new Map<string, Member>();
    this.swarms.set(image, swarm);
    const me: Member = { id: randomBytes(12).toString('base64url'), ws, address, tokens: RATE * 2, at: Date.now(), reportedBy: new Set() };
    // A member reported by this address, or by two distinct addresses, is not introduced (as the tracker does).
    const others = [...swarm.values()].filter((m) => !m.reportedBy.has(address) && m.reportedBy.size < 2);
    const lan = others.filter((m) => sameSubnet(m.address, address));
    const wan = others.filter((m) => !sameSubnet(m.address, address));
    swarm.set(me.id, me);
    ws.send(JSON.stringify({ t: 'welcome', id: me.id, peers: [...lan, ...wan].slice(0, LISTED).map((m) => m.id) }));
    ws.on('message', (data, isBinary) => {
      if (isBinary || !this.admit(me)) return void ws.close(1008, 'binary or too fast');
      let msg: unknown;
      try {
        msg = JSON.parse(String(data));
      } catch {
        return void ws.close(1008, 'not JSON');
      }
      const { t, to, data: payload, id, reason } = (msg ?? {}) as Record<string, unknown>;
      if (t === 'report' && typeof id === 'string') return this.report(swarm, me, id, typeof reason === 'string' ? reason : '');
      if (t !== 'signal' || typeof to !== 'string' || typeof payload !== 'object' || payload === null) return;
      const target = swarm.get(to);
      if (target && target !== me) target.ws.send(JSON.stringify({ t: 'signal', from: me.id, data: payload }));
    });
    ws.on('close', () => {
      this.connections--;
      swarm.delete(me.id);
      if (swarm.size === 0) this.swarms.delete(image);
    });
    ws.on('error', () => ws.terminate());
  }

  /** `{"t":"report","id","reason"}`: `by` got wrong bytes from member `id` of the same swarm. */
  private report(swarm: Map<string, Member>, by: Member, id: string, reason: string): void {
    const target = swarm.get(id);
    if (!target || target === by || target.reportedBy.has(by.address)) return;
    if (target.reportedBy.size >= 16) return;
    target.reportedBy.add(by.address);
    const printable = reason.replace(/[^\x20-\x7e]/g, '?').slice(0, 200);
    this.opts.log?.(`hub: webrtc member ${id.slice(0, 8)} (${target.address}) reported by ${by.address} for wrong bytes: ${printable}${target.reportedBy.size >= 2 ? '; no longer introduced to anyone' : '; no longer introduced to the reporter'}`);
  }

  private admit(m: Member): boolean {
    const now = Date.now();
    m.tokens = Math.min(RATE * 2, m.tokens + ((now - m.at) / 1000) * RATE);
    m.at = now;
    if (m.tokens < 1) return false;
    m.tokens--;
    return true;
  }
}
