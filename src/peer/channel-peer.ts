import { decodeObject } from '../format/object-codec.js';
import type { Codecs } from '../format/codecs.js';
import type { ObjectId } from '../format/digest.js';
import { StoreError, missing } from '../store/errors.js';
import type { GetOptions, ObjectRef, ObjectSource, VerifiedObject } from '../store/object-store.js';
import { Reassembly, WireError, decodeRequest, decodeResponse, encodeGet, encodeManifestRequest, encodeResponse } from './wire.js';

/**
 * The part of a W3C RTCDataChannel this uses (the browser's, or
 * node-datachannel's polyfill): any reliable ordered channel of binary messages.
 */
export interface DataChannelLike {
  binaryType: string;
  readonly readyState: string;
  readonly bufferedAmount: number;
  send(data: Uint8Array): void;
  close(): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event?: unknown) => void) | null;
}

/** What a peer serves: the same catalog whatever the transport (ShareCatalog on Node). */
export interface ObjectCatalog {
  /** Stored bytes of a shared object or null; with `waitMs`, may hold while this side's own fetch of it is in flight. */
  object(id: string, waitMs?: number): Promise<Uint8Array | null>;
  manifest(name: string, version: string): Promise<Uint8Array | null>;
}

export interface ChannelPeerOptions {
  name: string;
  /** Verifies what the other side sends (node:crypto + zstd-napi on Node, WebCrypto + v86's zstd in a page). */
  codecs: Codecs;
  /** Largest message the channel carries (the SCTP max-message-size both sides agreed on). */
  maxMessage: number;
  /** Serve this catalog to the other side (omit: fetch only). */
  serve?: ObjectCatalog;
  /** Requests answered per second, burst twice that (default 400). */
  ratePerSecond?: number;
  /** Requests being answered at once; beyond, BUSY (default 16). */
  maxConcurrent?: number;
  /** Per-request timeout (ms, default 15 s). */
  timeoutMs?: number;
  /** A bound shared by every channel of one swarm (a page answers a few strangers at once, not 16 per channel). */
  gate?: ServeGate;
}

/** Admits one answer at a time up to a swarm-wide bound; beyond it the asker gets BUSY. */
export class ServeGate {
  private active = 0;
  constructor(readonly limit: number) {}
  tryEnter(): boolean {
    if (this.active >= this.limit) return false;
    this.active++;
    return true;
  }
  leave(): void {
    this.active--;
  }
}

const MAX_OBJECT = 64 * 1024 * 1024;
const MAX_MANIFEST = 1024 * 1024;

/** The most stored bytes an object of `length` content bytes can take (raw, or a zstd frame of incompressible data): the receive bound. */
function storedBound(length: number): number {
  return Math.min(MAX_OBJECT, length + (length >> 7) + 1024);
}
const MAX_PENDING = 256;
/** Requests that wait for an answering slot, per channel (37 bytes each); more get BUSY. */
const MAX_QUEUED = 64;
/** Pause sending while this much is queued in the channel (memory bound, fairness). */
const HIGH_WATER = 4 * 1024 * 1024;

interface Pending {
  resolve: (body: Uint8Array | null) => void;
  reject: (err: unknown) => void;
  assembly: Reassembly;
}

/**
 * One data channel to one peer, both directions: an ObjectSource (every
 * object verified against its id before it is returned, so before it is used
 * or served again) and, with `serve`, the answering side (validated requests,
 * rate limit, bounded concurrency, responses split to the message size).
 */
export class ChannelPeer implements ObjectSource {
  readonly name: string;
  private nextReq = 1;
  private readonly pending = new Map<number, Pending>();
  private answering = 0;
  private readonly queued: Array<() => void> = [];
  private tokens: number;
  private tokensAt = Date.now();
  private closed = false;
  readonly stats = { served: 0, servedBytes: 0, framesSent: 0, fetched: 0, refused: 0 };

  constructor(
    private readonly channel: DataChannelLike,
    private readonly opts: ChannelPeerOptions,
  ) {
    this.name = opts.name;
    this.tokens = (opts.ratePerSecond ?? 400) * 2;
    channel.binaryType = 'arraybuffer';
    channel.onmessage = (event) => this.receive(event.data);
    channel.onclose = () => this.shut();
  }

  get isOpen(): boolean {
    return !this.closed && this.channel.readyState === 'open';
  }

  async get(ref: ObjectRef, options: GetOptions = {}): Promise<VerifiedObject> {
    const started = performance.now();
    const stored = await this.request((req) => encodeGet(req, ref.id, options.waitMs ?? 0), storedBound(ref.length), options.signal);
    if (!stored) throw missing(this.name, `object ${ref.id}`);
    const data = await decodeObject(this.opts.codecs, ref.id, ref.length, stored, this.name);
    this.stats.fetched++;
    return { id: ref.id, data, stored, source: this.name, transferMs: performance.now() - started };
  }

  /** The signed manifest envelope the peer shares, or null (the caller verifies it). */
  manifest(name: string, version: string, signal?: AbortSignal): Promise<Uint8Array | null> {
    return this.request((req) => encodeManifestRequest(req, `${name}@${version}`), MAX_MANIFEST, signal);
  }

  async has(_id: ObjectId): Promise<boolean> {
    return false;
  }

  async close(): Promise<void> {
    this.channel.close();
    this.shut();
  }

  /** Sends one request; the answer may be at most `maxBytes` (checked against DATA's total before anything is allocated). */
  private request(encode: (req: number) => Uint8Array, maxBytes: number, signal?: AbortSignal): Promise<Uint8Array | null> {
    if (!this.isOpen) return Promise.reject(new StoreError('store-unavailable', `${this.name}: channel closed`));
    if (this.pending.size >= MAX_PENDING) return Promise.reject(new StoreError('store-unavailable', `${this.name}: too many requests in flight`));
    const req = this.nextReq++ >>> 0;
    return new Promise<Uint8Array | null>((resolve, reject) => {
      const timeout = AbortSignal.timeout(this.opts.timeoutMs ?? 15_000);
      const abort = signal ? AbortSignal.any([signal, timeout]) : timeout;
      const onAbort = () => {
        this.pending.delete(req);
        reject(new StoreError('store-unavailable', `${this.name}: ${signal?.aborted ? 'cancelled' : 'no answer in time'}`));
      };
      abort.addEventListener('abort', onAbort, { once: true });
      const done = <T>(fn: (v: T) => void) => (v: T) => {
        abort.removeEventListener('abort', onAbort);
        this.pending.delete(req);
        fn(v);
      };
      this.pending.set(req, { resolve: done(resolve), reject: done(reject), assembly: new Reassembly(maxBytes) });
      try {
        this.channel.send(encode(req));
      } catch {
        this.pending.get(req)?.reject(new StoreError('store-unavailable', `${this.name}: channel closed`));
        this.shut();
      }
    });
  }

  private receive(raw: unknown): void {
    const msg = raw instanceof ArrayBuffer ? new Uint8Array(raw) : ArrayBuffer.isView(raw) ? new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength) : undefined;
    if (!msg || msg.length === 0) return;
    if (msg[0]! < 0x80) {
      this.answer(msg).catch(() => this.shut());
      return;
    }
    const frame = decodeResponse(msg);
    const waiting = frame && this.pending.get(frame.req);
    if (!frame || !waiting) return; // late answer to a cancelled request, or noise
    if (frame.kind === 'missing') return waiting.resolve(null);
    // BUSY skips this source for the read, without counting against it (as HTTP peers' 429/503).
    if (frame.kind !== 'data') return waiting.reject(new StoreError('object-missing', `${this.name}: busy`));
    try {
      const body = waiting.assembly.add(frame);
      if (body) waiting.resolve(body);
    } catch (err) {
      waiting.reject(new StoreError('store-unavailable', `${this.name}: ${(err as WireError).message}`));
    }
  }

  private async answer(msg: Uint8Array): Promise<void> {
    const request = decodeRequest(msg);
    if (!request) return;
    // A member that only fetches still answers, so the asker moves on at once.
    if (!this.opts.serve) return this.sendAll(encodeResponse(request.req, null, this.opts.maxMessage));
    const busy = () => {
      this.stats.refused++;
      return this.sendAll(encodeResponse(request.req, 'busy', this.opts.maxMessage));
    };
    if (!this.admit()) return busy();
    if (this.answering >= (this.opts.maxConcurrent ?? 16)) {
      // A few requests wait for a slot (an asker pipelines its reads); beyond that, BUSY.
      if (this.queued.length >= MAX_QUEUED) return busy();
      await new Promise<void>((resolve) => this.queued.push(resolve)); // the slot is handed over: `answering` stays counted
      if (!this.isOpen) return this.release();
    } else this.answering++;
    if (!(this.opts.gate?.tryEnter() ?? true)) {
      this.release();
      return busy();
    }
    try {
      let body: Uint8Array | null = null;
      if (request.kind === 'get') body = await this.opts.serve.object(request.id, request.waitMs);
      else {
        const at = request.image.indexOf('@');
        if (at > 0) body = await this.opts.serve.manifest(request.image.slice(0, at), request.image.slice(at + 1));
      }
      if (body) {
        this.stats.served++;
        this.stats.servedBytes += body.length;
      }
      await this.sendAll(encodeResponse(request.req, body, this.opts.maxMessage));
    } catch {
      await this.sendAll(encodeResponse(request.req, null, this.opts.maxMessage));
    } finally {
      this.opts.gate?.leave();
      this.release();
    }
  }

  /** Hands this answer's slot to the next queued request, or frees it. */
  private release(): void {
    const next = this.queued.shift();
    if (next) next();
    else this.answering--;
  }

  private async sendAll(frames: Uint8Array[]): Promise<void> {
    for (const frame of frames) {
      // Bounded polling instead of bufferedamountlow: the same code on every channel implementation.
      for (let waited = 0; this.isOpen && this.channel.bufferedAmount > HIGH_WATER && waited < 30_000; waited += 10) await new Promise((r) => setTimeout(r, 10));
      if (!this.isOpen) return;
      try {
        this.channel.send(frame);
      } catch {
        return this.shut(); // closed between the check and the send (the other side dropped us)
      }
      this.stats.framesSent++;
    }
  }

  private admit(): boolean {
    const rate = this.opts.ratePerSecond ?? 400;
    const now = Date.now();
    this.tokens = Math.min(rate * 2, this.tokens + ((now - this.tokensAt) / 1000) * rate);
    this.tokensAt = now;
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }

  private shut(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of [...this.pending.values()]) p.reject(new StoreError('store-unavailable', `${this.name}: channel closed`));
    this.pending.clear();
    for (const wake of this.queued.splice(0)) wake();
  }
}
