import { HostmeError } from '../errors.js';
import type { Codecs } from '../format/codecs.js';
import { unrefTimer } from '../store/events.js';
import { ChannelPeer, ServeGate, type DataChannelLike, type ObjectCatalog } from './channel-peer.js';
import { IMAGE_KEY, SIGNAL_PATH } from './names.js';

/**
 * WebRTC peers of one image's swarm, signaled through the hub
 * (docs/peers.md "Signaling"). Written against the W3C API only
 * (RTCPeerConnection, WebSocket), injected by the caller: the browser passes
 * its own, Node passes node-datachannel's polyfill and `ws`.
 */
export interface RtcChannel extends DataChannelLike {
  onopen: (() => void) | null;
}

export interface RtcPeerConnectionLike {
  createDataChannel(label: string, init?: { ordered?: boolean }): RtcChannel;
  createOffer(): Promise<{ type: string; sdp?: string }>;
  createAnswer(): Promise<{ type: string; sdp?: string }>;
  setLocalDescription(description?: { type: string; sdp?: string }): Promise<void>;
  setRemoteDescription(description: { type: string; sdp?: string }): Promise<void>;
  addIceCandidate(candidate: { candidate: string; sdpMid?: string | null }): Promise<void>;
  readonly localDescription: { type: string; sdp?: string } | null;
  readonly sctp?: { maxMessageSize: number } | null;
  readonly connectionState: string;
  onicecandidate: ((event: { candidate: { candidate: string; sdpMid?: string | null } | null }) => void) | null;
  ondatachannel: ((event: { channel: RtcChannel }) => void) | null;
  onconnectionstatechange: (() => void) | null;
  close(): void;
}

export interface WebSocketLike {
  send(data: string): void;
  close(): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  onopen: (() => void) | null;
  onclose: (() => void) | null;
  onerror: ((event: unknown) => void) | null;
}

export interface RtcEnvironment {
  RTCPeerConnection: new (config: { iceServers: Array<{ urls: string | string[] }> }) => RtcPeerConnectionLike;
  WebSocket: new (url: string) => WebSocketLike;
}

export interface RtcSwarmOptions {
  hub: string;
  /** Verifies every object a member sends (see ChannelPeerOptions.codecs). */
  codecs: Codecs;
  image: string;
  /** Answer other members' requests from this catalog (omit: fetch only). */
  serve?: ObjectCatalog;
  /** Channels opened to members the hub lists, at most (default 8); incoming ones are capped at twice that. */
  maxConnections?: number;
  iceServers?: Array<{ urls: string | string[] }>;
  /** Cap on the message size used (default: what SCTP negotiated, at most 256 KiB). */
  maxMessage?: number;
  /** Bounds on answering strangers: per channel (ChannelPeer defaults 16 at once, 400/s) and in all (default 32 at once). */
  serveLimits?: { maxConcurrent?: number; ratePerSecond?: number; total?: number };
  /** A channel to a member opened: hand it to a mirror group. */
  onPeer?: (peer: ChannelPeer) => void;
}

const LABEL = 'hostme-objects/1';
const MAX_SDP = 12_000;
const MAX_OFFERS = 3;

export class RtcSwarm {
  private ws?: WebSocketLike;
  private readonly connections = new Map<string, RtcPeerConnectionLike>();
  private readonly open: ChannelPeer[] = [];
  private incoming = 0;
  private closed = false;
  /** Member id of each open channel (to report a liar to the hub). */
  private readonly memberOf = new WeakMap<ChannelPeer, string>();
  private readonly gate: ServeGate;
  /** Members the hub listed in its welcome (none: we are the first; nobody to fetch from yet). */
  members: string[] = [];
  /** Offers made to each member: a connection that fails is offered again, a few times (ICE can fail under load). */
  private readonly attempts = new Map<string, number>();
  /** Signals of one member are handled in order (a candidate may arrive before its offer is applied). */
  private readonly chains = new Map<string, Promise<void>>();
  /** Candidates that came before the remote description, applied after it (at most 32 per member). */
  private readonly early = new Map<string, Array<{ candidate: string; sdpMid: string | null }>>();
  selfId?: string;

  constructor(
    private readonly env: RtcEnvironment,
    private readonly opts: RtcSwarmOptions,
  ) {
    if (!IMAGE_KEY.test(opts.image)) throw new HostmeError('usage', `not NAME@VERSION: ${opts.image}`);
    this.gate = new ServeGate(opts.serveLimits?.total ?? 32);
  }

  /** Open channels (fetch from them, or they fetch from us). */
  get peers(): ChannelPeer[] {
    return this.open.filter((p) => p.isOpen);
  }

  /** Joins the image's swarm; resolves once the hub welcomed us (offers to listed members are under way). */
  start(): Promise<void> {
    const url = new URL(SIGNAL_PATH, this.opts.hub);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('image', this.opts.image);
    const ws = new this.env.WebSocket(url.href);
    this.ws = ws;
    return new Promise((resolve, reject) => {
      ws.onerror = () => reject(new HostmeError('peer-signaling', `signaling ${url.origin}: connection failed`, { url: url.origin }));
      ws.onclose = () => reject(new HostmeError('peer-signaling', `signaling ${url.origin}: closed (no public swarm for ${this.opts.image}?)`, { url: url.origin }));
      ws.onmessage = (event) => {
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(String(event.data)) as Record<string, unknown>;
        } catch {
          return;
        }
        if (msg.t === 'welcome' && typeof msg.id === 'string') {
          this.selfId = msg.id;
          const listed = Array.isArray(msg.peers) ? msg.peers.filter((p): p is string => typeof p === 'string').slice(0, this.opts.maxConnections ?? 8) : [];
          this.members = listed;
          for (const id of listed) void this.offer(id).catch(() => this.drop(id));
          resolve();
        } else if (msg.t === 'signal' && typeof msg.from === 'string' && typeof msg.data === 'object' && msg.data !== null) {
          const from = msg.from;
          const data = msg.data as Record<string, unknown>;
          if (!this.chains.has(from) && this.chains.size >= 64) return;
          const next = (this.chains.get(from) ?? Promise.resolve()).then(() => this.signal(from, data)).catch(() => this.drop(from));
          this.chains.set(from, next);
        }
      };
    });
  }

  /**
   * Tells the hub that a member served wrong bytes (docs/peers.md "Signaling"):
   * the hub stops listing it to us, and to everyone once two addresses reported it.
   */
  report(peer: ChannelPeer, reason: string): void {
    const id = this.memberOf.get(peer);
    if (id && !this.closed) this.ws?.send(JSON.stringify({ t: 'report', id, reason: reason.slice(0, 200) }));
    this.drop(id ?? '');
  }

  close(): void {
    this.closed = true;
    for (const pc of this.connections.values()) pc.close();
    this.connections.clear();
    this.ws?.close();
  }

  private newConnection(id: string): RtcPeerConnectionLike {
    const pc = new this.env.RTCPeerConnection({ iceServers: this.opts.iceServers ?? [] });
    this.connections.set(id, pc);
    pc.onicecandidate = (event) => {
      if (event.candidate?.candidate) this.send(id, { kind: 'candidate', candidate: event.candidate.candidate, sdpMid: event.candidate.sdpMid ?? null });
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState !== 'failed' && pc.connectionState !== 'closed') return;
      if (this.connections.get(id) === pc) this.drop(id);
      this.retry(id);
    };
    return pc;
  }

  private async offer(id: string): Promise<void> {
    if (this.connections.has(id) || this.closed) return;
    this.attempts.set(id, (this.attempts.get(id) ?? 0) + 1);
    const pc = this.newConnection(id);
    this.adopt(id, pc, pc.createDataChannel(LABEL, { ordered: true }));
    await pc.setLocalDescription(await pc.createOffer());
    this.send(id, { kind: 'offer', sdp: pc.localDescription?.sdp ?? '' });
  }

  /** A message another member sent through the hub: validated, never trusted. */
  private async signal(from: string, data: Record<string, unknown>): Promise<void> {
    if (this.closed) return;
    const kind = data.kind;
    if (kind === 'offer' && typeof data.sdp === 'string' && data.sdp.length <= MAX_SDP) {
      const existing = this.connections.get(from);
      // A new offer from a member whose connection never came up replaces it (the offerer retries after a failure).
      if (existing && existing.connectionState === 'connected') return;
      if (existing) this.drop(from);
      else if (this.incoming >= 2 * (this.opts.maxConnections ?? 8)) return;
      else this.incoming++;
      const pc = this.newConnection(from);
      pc.ondatachannel = (event) => {
        if (event.channel && (event.channel as unknown as { label?: string }).label === LABEL) this.adopt(from, pc, event.channel);
      };
      await pc.setRemoteDescription({ type: 'offer', sdp: data.sdp });
      await this.applyEarly(from, pc);
      await pc.setLocalDescription(await pc.createAnswer());
      this.send(from, { kind: 'answer', sdp: pc.localDescription?.sdp ?? '' });
    } else if (kind === 'answer' && typeof data.sdp === 'string' && data.sdp.length <= MAX_SDP) {
      const pc = this.connections.get(from);
      if (!pc || this.described.has(from)) return;
      await pc.setRemoteDescription({ type: 'answer', sdp: data.sdp });
      await this.applyEarly(from, pc);
    } else if (kind === 'candidate' && typeof data.candidate === 'string' && data.candidate.length <= 512) {
      const candidate = { candidate: data.candidate, sdpMid: typeof data.sdpMid === 'string' ? data.sdpMid : null };
      const pc = this.connections.get(from);
      if (pc && this.described.has(from)) await pc.addIceCandidate(candidate);
      else {
        const list = this.early.get(from) ?? [];
        if (list.length < 32) list.push(candidate);
        this.early.set(from, list);
      }
    }
  }

  private readonly described = new Set<string>();

  private async applyEarly(id: string, pc: RtcPeerConnectionLike): Promise<void> {
    this.described.add(id);
    for (const candidate of this.early.get(id) ?? []) await pc.addIceCandidate(candidate).catch(() => {});
    this.early.delete(id);
  }

  private adopt(id: string, pc: RtcPeerConnectionLike, channel: RtcChannel): void {
    const ready = () => {
      const negotiated = pc.sctp?.maxMessageSize || 65_536;
      const maxMessage = Math.max(1024, Math.min(negotiated, this.opts.maxMessage ?? 256 * 1024));
      const limits = this.opts.serveLimits ?? {};
      const peer = new ChannelPeer(channel, {
        name: `webrtc peer ${id.slice(0, 8)}`,
        codecs: this.opts.codecs,
        maxMessage,
        serve: this.opts.serve,
        gate: this.gate,
        ...(limits.maxConcurrent ? { maxConcurrent: limits.maxConcurrent } : {}),
        ...(limits.ratePerSecond ? { ratePerSecond: limits.ratePerSecond } : {}),
      });
      this.memberOf.set(peer, id);
      this.open.push(peer);
      this.opts.onPeer?.(peer);
    };
    if (channel.readyState === 'open') ready();
    else channel.onopen = ready;
  }

  /** Offers again to a member we offered to whose connection failed: at most 3 offers, 1 s apart and more. */
  private retry(id: string): void {
    const made = this.attempts.get(id);
    if (made === undefined || made >= MAX_OFFERS || this.closed) return;
    unrefTimer(setTimeout(() => void this.offer(id).catch(() => this.drop(id)), 1000 * made));
  }

  private drop(id: string): void {
    this.connections.get(id)?.close();
    this.connections.delete(id);
    this.early.delete(id);
    this.described.delete(id);
    this.chains.delete(id);
  }

  private send(to: string, data: Record<string, unknown>): void {
    this.ws?.send(JSON.stringify({ t: 'signal', to, data }));
  }
}
