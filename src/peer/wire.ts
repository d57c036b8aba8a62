/**
 * The peer wire protocol over a message channel (a WebRTC data channel; any
 * reliable, ordered channel of binary messages): docs/peers.md "Data channel
 * protocol". Web-standard only (Uint8Array, DataView, TextEncoder) so the
 * browser and Node share it.
 *
 *   request  GET       [0x01][req u32][id: 32 bytes]
 *   request  MANIFEST  [0x02][req u32][utf-8 "NAME@VERSION", ≤ 130 bytes]
 *   request  GET_WAIT  [0x03][req u32][wait ms u16][id: 32 bytes]          (hold while in flight there)
 *   response DATA      [0x81][req u32][total u32][offset u32][bytes…]   (one or more, in order)
 *   response MISSING   [0x82][req u32]
 *   response BUSY      [0x83][req u32]                                  (rate limit or too many requests)
 *
 * A response body is split into DATA messages no larger than the channel's
 * maximum message size; the receiver checks each offset against what it has
 * and the total against its own bound before allocating anything.
 */
export const MSG_GET = 0x01;
export const MSG_MANIFEST = 0x02;
export const MSG_GET_WAIT = 0x03;
/** The longest GET_WAIT a side honours (ms); larger values are clamped. */
export const MAX_WAIT_MS = 10_000;
export const MSG_DATA = 0x81;
export const MSG_MISSING = 0x82;
export const MSG_BUSY = 0x83;
const DATA_HEADER = 13;
const HEX = /^[0-9a-f]{64}$/;

export type Request = { kind: 'get'; req: number; id: string; waitMs: number } | { kind: 'manifest'; req: number; image: string };
export type ResponseFrame = { kind: 'data'; req: number; total: number; offset: number; bytes: Uint8Array } | { kind: 'missing' | 'busy'; req: number };

export class WireError extends Error {}

/** GET, or GET_WAIT when `waitMs` > 0: the other side may hold the answer while its own fetch of the object is in flight. */
export function encodeGet(req: number, id: string, waitMs = 0): Uint8Array {
  if (!HEX.test(id)) throw new WireError(`not an object id: ${id.slice(0, 80)}`);
  const wait = waitMs > 0 ? 2 : 0;
  const out = new Uint8Array(5 + wait + 32);
  const view = new DataView(out.buffer);
  out[0] = wait ? MSG_GET_WAIT : MSG_GET;
  view.setUint32(1, req);
  if (wait) view.setUint16(5, Math.min(MAX_WAIT_MS, Math.round(waitMs)));
  for (let i = 0; i < 32; i++) out[5 + wait + i] = parseInt(id.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export function encodeManifestRequest(req: number, image: string): Uint8Array {
  const text = new TextEncoder().encode(image);
  if (text.length > 130) throw new WireError('image name too long');
  const out = new Uint8Array(5 + text.length);
  out[0] = MSG_MANIFEST;
  new DataView(out.buffer).setUint32(1, req);
  out.set(text, 5);
  return out;
}

/** A request from the wire, or undefined for anything malformed (the caller drops it). */
export function decodeRequest(msg: Uint8Array): Request | undefined {
  if (msg.length < 5) return undefined;
  const req = new DataView(msg.buffer, msg.byteOffset, msg.length).getUint32(1);
  if ((msg[0] === MSG_GET && msg.length === 37) || (msg[0] === MSG_GET_WAIT && msg.length === 39)) {
    const at = msg.length - 32;
    let id = '';
    for (let i = at; i < msg.length; i++) id += msg[i]!.toString(16).padStart(2, '0');
    const waitMs = msg[0] === MSG_GET_WAIT ? Math.min(MAX_WAIT_MS, new DataView(msg.buffer, msg.byteOffset, msg.length).getUint16(5)) : 0;
    return { kind: 'get', req, id, waitMs };
  }
  if (msg[0] === MSG_MANIFEST && msg.length <= 135) {
    return { kind: 'manifest', req, image: new TextDecoder().decode(msg.subarray(5)) };
  }
  return undefined;
}

/** The messages that answer `req` with `body` (null: missing), each at most `maxMessage` bytes. */
export function encodeResponse(req: number, body: Uint8Array | null | 'busy', maxMessage: number): Uint8Array[] {
  if (body === null || body === 'busy') {
    const out = new Uint8Array(5);
    out[0] = body === null ? MSG_MISSING : MSG_BUSY;
    new DataView(out.buffer).setUint32(1, req);
    return [out];
  }
  const room = Math.max(1024, maxMessage) - DATA_HEADER;
  const frames: Uint8Array[] = [];
  for (let offset = 0; offset < body.length || (offset === 0 && body.length === 0); offset += room) {
    const part = body.subarray(offset, offset + room);
    const out = new Uint8Array(DATA_HEADER + part.length);
    const view = new DataView(out.buffer);
    out[0] = MSG_DATA;
    view.setUint32(1, req);
    view.setUint32(5, body.length);
    view.setUint32(9, offset);
    out.set(part, DATA_HEADER);
    frames.push(out);
    if (body.length === 0) break;
  }
  return frames;
}

export function decodeResponse(msg: Uint8Array): ResponseFrame | undefined {
  if (msg.length < 5) return undefined;
  const view = new DataView(msg.buffer, msg.byteOffset, msg.length);
  const req = view.getUint32(1);
  if (msg[0] === MSG_MISSING) return { kind: 'missing', req };
  if (msg[0] === MSG_BUSY) return { kind: 'busy', req };
  if (msg[0] === MSG_DATA && msg.length >= DATA_HEADER) return { kind: 'data', req, total: view.getUint32(5), offset: view.getUint32(9), bytes: msg.subarray(DATA_HEADER) };
  return undefined;
}

/** Collects one response's DATA frames; bounded by `maxBytes`, strictly in order. */
export class Reassembly {
  private body?: Uint8Array;
  private received = 0;

  constructor(private readonly maxBytes: number) {}

  /** Adds a frame; returns the whole body once complete. Throws WireError on anything inconsistent. */
  add(frame: { total: number; offset: number; bytes: Uint8Array }): Uint8Array | undefined {
    if (!this.body) {
      if (frame.total > this.maxBytes) throw new WireError(`response of ${frame.total} bytes is over the ${this.maxBytes}-byte limit`);
      this.body = new Uint8Array(frame.total);
    }
    if (frame.total !== this.body.length || frame.offset !== this.received || frame.offset + frame.bytes.length > this.body.length) throw new WireError('response frames out of order or inconsistent');
    this.body.set(frame.bytes, frame.offset);
    this.received += frame.bytes.length;
    return this.received === this.body.length ? this.body : undefined;
  }
}
