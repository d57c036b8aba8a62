import { decodeObject } from '../format/object-codec.js';
// Peers' HTTP servers are reached from Node only (a page cannot fetch a LAN address over http from https).
import { nodeCodecs } from '../format/node/codecs.js';
import { objectPath, type ObjectId } from '../format/digest.js';
import { StoreError, missing } from '../store/errors.js';
import type { GetOptions, ObjectRef, ObjectSource, VerifiedObject } from '../store/object-store.js';
import { httpRequestChannel } from '../store/http-transport.js';
import { peerUrl } from './address.js';

/** Largest object body accepted from a peer (a chunk index of a large disk; chunks are ≤ 4 MiB). */
const MAX_BODY = 64 * 1024 * 1024;
const MAX_MANIFEST = 1024 * 1024;

/**
 * Another machine's shared cache over HTTP, as an untrusted object source:
 * the URL is built from the address and port the tracker returned (checked by
 * the caller), redirects are refused, bodies are bounded, and every object is
 * verified against its id before anyone sees it.
 */
export class HttpPeerSource implements ObjectSource {
  readonly name: string;
  readonly base: string;

  constructor(
    readonly address: string,
    readonly port: number,
    private readonly timeoutMs = 15_000,
  ) {
    this.base = peerUrl(address, port);
    this.name = `peer ${this.base}`;
  }

  async get(ref: ObjectRef, options: GetOptions = {}): Promise<VerifiedObject> {
    const started = performance.now();
    // `wait`: the peer may hold the request while its own fetch of the object is in flight (docs/peers.md "Flash crowd").
    const wait = options.waitMs && options.waitMs > 0 ? `?wait=${Math.min(10_000, Math.round(options.waitMs))}` : '';
    const stored = await this.read(`/${objectPath(ref.id)}${wait}`, MAX_BODY, options.signal);
    if (!stored) throw missing(this.name, `object ${ref.id}`);
    const transferMs = performance.now() - started;
    httpRequestChannel.publish({ url: `${this.base}/${objectPath(ref.id)}`, method: 'GET', status: 200, bytes: stored.length, ms: transferMs, attempt: 0 });
    return { id: ref.id, data: await decodeObject(nodeCodecs, ref.id, ref.length, stored, this.name), stored, source: this.name, transferMs };
  }

  /** The signed manifest envelope the peer shares (the caller verifies the signature), or null. */
  manifest(name: string, version: string, signal?: AbortSignal): Promise<Uint8Array | null> {
    return this.read(`/manifests/${encodeURIComponent(name)}/${encodeURIComponent(version)}`, MAX_MANIFEST, signal);
  }

  async has(id: ObjectId): Promise<boolean> {
    const response = await fetch(`${this.base}/${objectPath(id)}`, { method: 'HEAD', redirect: 'error', signal: AbortSignal.timeout(this.timeoutMs) }).catch(() => undefined);
    return response?.status === 200;
  }

  async close(): Promise<void> {}

  private async read(path: string, maxBytes: number, outer?: AbortSignal): Promise<Uint8Array | null> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = outer ? AbortSignal.any([outer, timeout]) : timeout;
    let response: Response;
    try {
      response = await fetch(`${this.base}${path}`, { signal, redirect: 'error', headers: { 'accept-encoding': 'identity' } });
    } catch (err) {
      throw new StoreError('store-unavailable', `${this.name}: ${(err as Error).cause ? String((err as Error).cause) : (err as Error).message}`, { peer: this.base });
    }
    if (response.status === 404) {
      await response.body?.cancel();
      return null;
    }
    if (response.status === 429 || response.status === 503) {
      // Busy is not broken: this read goes elsewhere, and the peer is not held against it.
      await response.body?.cancel();
      throw new StoreError('object-missing', `${this.name}: busy (HTTP ${response.status})`, { peer: this.base, status: response.status });
    }
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new StoreError('store-unavailable', `${this.name}: HTTP ${response.status}`, { peer: this.base, status: response.status });
    }
    const declared = Number(response.headers.get('content-length') ?? NaN);
    if (declared > maxBytes) {
      await response.body?.cancel();
      throw new StoreError('store-unavailable', `${this.name}: body of ${declared} bytes is over the ${maxBytes}-byte limit`, { peer: this.base });
    }
    const parts: Uint8Array[] = [];
    let size = 0;
    try {
      for await (const part of response.body as unknown as AsyncIterable<Uint8Array>) {
        size += part.length;
        if (size > maxBytes) throw new StoreError('store-unavailable', `${this.name}: body over the ${maxBytes}-byte limit`, { peer: this.base });
        parts.push(part);
      }
    } catch (err) {
      if (err instanceof StoreError) throw err;
      throw new StoreError('store-unavailable', `${this.name}: ${(err as Error).message}`, { peer: this.base });
    }
    const body = new Uint8Array(size);
    let at = 0;
    for (const part of parts) {
      body.set(part, at);
      at += part.length;
    }
    return body;
  }
}
