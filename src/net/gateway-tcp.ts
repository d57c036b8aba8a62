/**
 * TCP at the gateway address: the switch ends a guest's TCP connection to
 * GATEWAY:PORT itself and splices the byte stream to a unix socket the
 * port's owner (hostme run) named for that port: a caretaker such as the
 * egress proxy or the folder server. No other TCP leaves the overlay: a
 * SYN to any other gateway port is answered with RST.
 *
 * A deliberately small TCP (RFC 9293 subset) for one in-memory link: no
 * window scaling, no SACK, no timestamps, in-order receive only (anything
 * else is re-ACKed and dropped, the guest retransmits), go-back-N resend of
 * our unacknowledged bytes on a doubling timer. Memory per connection is
 * bounded by the receive window (64 KiB in flight from the guest, written
 * to the unix socket with backpressure) and OUT_HIGH on the send side.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { internetChecksum, type Ipv4Packet } from './frame.js';

export const IPPROTO_TCP = 6;
const FIN = 0x01;
const SYN = 0x02;
const RST = 0x04;
const PSH = 0x08;
const ACK = 0x10;
const OUR_MSS = 1460;
const MAX_WINDOW = 65535;
/** Stop reading the caretaker's socket above this many unacknowledged bytes; resume below OUT_LOW. */
const OUT_HIGH = 256 * 1024;
const OUT_LOW = 64 * 1024;
const MAX_CONNECTIONS = 64;
const RTO_MS = 200;
const MAX_RETRIES = 8;

export interface TcpSegment {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  mss?: number;
  payload: Buffer;
}

function pseudoSum(src: number, dst: number, length: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + IPPROTO_TCP + length;
}

/** Parses and checks a TCP segment; undefined if malformed or its checksum is wrong. */
export function parseTcp(ip: Ipv4Packet): TcpSegment | undefined {
  const b = ip.payload;
  if (ip.proto !== IPPROTO_TCP || ip.fragment || b.length < 20) return undefined;
  const offset = (b[12]! >> 4) * 4;
  if (offset < 20 || offset > b.length) return undefined;
  if (internetChecksum(b, 0, b.length, pseudoSum(ip.src, ip.dst, b.length)) !== 0) return undefined;
  let mss: number | undefined;
  for (let i = 20; i < offset; ) {
    const kind = b[i]!;
    if (kind === 0) break;
    if (kind === 1) { i++; continue; }
    const len = b[i + 1];
    if (len === undefined || len < 2 || i + len > offset) return undefined;
    if (kind === 2 && len === 4) mss = b.readUInt16BE(i + 2);
    i += len;
  }
  return { srcPort: b.readUInt16BE(0), dstPort: b.readUInt16BE(2), seq: b.readUInt32BE(4), ack: b.readUInt32BE(8), flags: b[13]! & 0x3f, window: b.readUInt16BE(14), mss, payload: b.subarray(offset) };
}

export function buildTcp(src: number, dst: number, seg: TcpSegment): Buffer {
  const options = seg.mss !== undefined ? 4 : 0;
  const b = Buffer.alloc(20 + options + seg.payload.length);
  b.writeUInt16BE(seg.srcPort, 0);
  b.writeUInt16BE(seg.dstPort, 2);
  b.writeUInt32BE(seg.seq >>> 0, 4);
  b.writeUInt32BE(seg.ack >>> 0, 8);
  b[12] = ((20 + options) / 4) << 4;
  b[13] = seg.flags;
  b.writeUInt16BE(seg.window, 14);
  if (seg.mss !== undefined) {
    b[20] = 2;
    b[21] = 4;
    b.writeUInt16BE(seg.mss, 22);
  }
  b.set(seg.payload, 20 + options);
  b.writeUInt16BE(internetChecksum(b, 0, b.length, pseudoSum(src, dst, b.length)), 16);
  return b;
}

/** a - b in sequence space (signed). */
function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

/** Where the caretaker for a gateway port listens (a unix socket), or undefined: not served. */
export type GatewayServices = (port: number) => string | undefined;

export interface GatewayTcpCounters {
  opened: number;
  refused: number;
  reset: number;
}

/** The gateway's TCP endpoint for one switch port (one guest). */
export class GatewayTcp {
  private readonly conns = new Map<number, Connection>();
  readonly counters: GatewayTcpCounters = { opened: 0, refused: 0, reset: 0 };

  constructor(
    readonly services: GatewayServices,
    /** Sends a TCP segment (already built) from the gateway to the guest. */
    readonly send: (segment: TcpSegment) => void,
  ) {}

  get size(): number {
    return this.conns.size;
  }

  segment(seg: TcpSegment): void {
    const key = seg.srcPort * 65536 + seg.dstPort;
    const conn = this.conns.get(key);
    if (conn) return conn.receive(seg);
    if (seg.flags & RST) return;
    const socketPath = seg.flags === SYN ? this.services(seg.dstPort) : undefined;
    if (!socketPath || this.conns.size >= MAX_CONNECTIONS) {
      this.counters.refused++;
      // RFC 9293 3.10.7.1: a segment to a closed port gets a RST.
      if (seg.flags & ACK) this.send({ srcPort: seg.dstPort, dstPort: seg.srcPort, seq: seg.ack, ack: 0, flags: RST, window: 0, payload: Buffer.alloc(0) });
      else this.send({ srcPort: seg.dstPort, dstPort: seg.srcPort, seq: 0, ack: (seg.seq + seg.payload.length + ((seg.flags & SYN) ? 1 : 0) + ((seg.flags & FIN) ? 1 : 0)) >>> 0, flags: RST | ACK, window: 0, payload: Buffer.alloc(0) });
      return;
    }
    this.counters.opened++;
    this.conns.set(key, new Connection(this, seg, socketPath, () => this.conns.delete(key)));
  }

  /** Resets every connection (the port left the switch). */
  close(): void {
    for (const conn of [...this.conns.values()]) conn.abort(true);
  }
}

class Connection {
  private readonly socket: net.Socket;
  private readonly mss: number;
  private rcvNxt: number;
  private sndUna: number;
  private sndNxt: number;
  private sndWnd: number;
  private established = false;
  /** Bytes from the caretaker from sndUna on; `sent` of them are in flight. */
  private out: Buffer = Buffer.alloc(0);
  private sent = 0;
  private socketEnded = false;
  /** Highest sequence number sent (a resend goes back; a late ACK may still cover up to here). */
  private sndMax: number;
  /** Our FIN's sequence number, once sent. */
  private finSeq?: number;
  private finAcked = false;
  private guestFin = false;
  private timer?: NodeJS.Timeout;
  private retries = 0;
  private closed = false;
  private paused = false;
  private readonly guestPort: number;
  private readonly gatewayPort: number;

  constructor(
    private readonly owner: GatewayTcp,
    syn: TcpSegment,
    socketPath: string,
    private readonly onClose: () => void,
  ) {
    this.guestPort = syn.srcPort;
    this.gatewayPort = syn.dstPort;
    this.mss = Math.max(64, Math.min(OUR_MSS, syn.mss ?? 536));
    this.rcvNxt = (syn.seq + 1) >>> 0;
    const iss = randomBytes(4).readUInt32BE(0);
    this.sndUna = iss;
    this.sndNxt = (iss + 1) >>> 0;
    this.sndMax = this.sndNxt;
    this.sndWnd = syn.window;
    this.socket = net.connect(socketPath);
    this.socket.on('data', (chunk: Buffer) => {
      this.out = this.out.length ? Buffer.concat([this.out, chunk]) : chunk;
      if (this.out.length > OUT_HIGH && !this.paused) {
        this.paused = true;
        this.socket.pause();
      }
      this.pump();
    });
    this.socket.on('drain', () => this.emit(ACK)); // window update
    this.socket.on('end', () => {
      this.socketEnded = true;
      this.pump();
    });
    this.socket.on('error', () => {});
    this.socket.on('close', () => {
      // Closed before it ended cleanly (refused, reset): the guest gets a RST.
      if (!this.socketEnded) this.abort(true);
    });
    this.emit(SYN | ACK, iss, Buffer.alloc(0), true);
    this.arm();
  }

  private window(): number {
    return Math.max(0, MAX_WINDOW - this.socket.writableLength);
  }

  private emit(flags: number, seq = this.sndNxt, payload: Buffer = Buffer.alloc(0), withMss = false): void {
    this.owner.send({ srcPort: this.gatewayPort, dstPort: this.guestPort, seq, ack: this.rcvNxt, flags, window: this.window(), payload, ...(withMss ? { mss: OUR_MSS } : {}) });
  }


  receive(seg: TcpSegment): void {
    if (this.closed) return;
    if (seg.flags & RST) return this.abort(false);
    if (seg.flags & SYN) {
      // A retransmitted SYN: our SYN-ACK was lost.
      if (!this.established) this.emit(SYN | ACK, this.sndUna, Buffer.alloc(0), true);
      return;
    }
    if (!(seg.flags & ACK)) return;
    this.sndWnd = seg.window;
    if (!this.established) {
      if (seg.ack !== this.sndNxt) return;
      this.established = true;
      this.sndUna = this.sndNxt;
      this.retries = 0;
      this.disarm();
    } else {
      const acked = seqDiff(seg.ack, this.sndUna);
      if (acked > 0 && acked <= seqDiff(this.sndMax, this.sndUna)) {
        this.out = this.out.subarray(Math.min(acked, this.out.length));
        if (this.finSeq !== undefined && seqDiff(seg.ack, this.finSeq) > 0) this.finAcked = true;
        this.sndUna = seg.ack;
        if (seqDiff(this.sndNxt, this.sndUna) < 0) this.sndNxt = this.sndUna;
        this.sent = Math.max(0, seqDiff(this.sndNxt, this.sndUna) - (this.finInFlight() ? 1 : 0));
        this.retries = 0;
        this.disarm();
        if (this.sndUna !== this.sndNxt) this.arm();
        if (this.paused && this.out.length < OUT_LOW) {
          this.paused = false;
          this.socket.resume();
        }
      }
    }
    this.take(seg);
    this.pump();
    if (this.finAcked && this.guestFin) this.finish();
  }

  /** In-order data and FIN from the guest; anything else is re-ACKed. */
  private take(seg: TcpSegment): void {
    const fin = (seg.flags & FIN) !== 0;
    if (seg.payload.length === 0 && !fin) return;
    const skip = seqDiff(this.rcvNxt, seg.seq);
    if (skip < 0 || skip > seg.payload.length || (skip === seg.payload.length && !fin) || this.guestFin) {
      this.emit(ACK);
      return;
    }
    const data = seg.payload.subarray(skip);
    const room = this.window();
    const accepted = data.subarray(0, room);
    if (accepted.length) {
      this.socket.write(accepted);
      this.rcvNxt = (this.rcvNxt + accepted.length) >>> 0;
    }
    if (fin && accepted.length === data.length) {
      this.rcvNxt = (this.rcvNxt + 1) >>> 0;
      this.guestFin = true;
      this.socket.end();
    }
    this.emit(ACK);
  }

  /** Sends what the window allows, then our FIN once the caretaker ended. */
  private pump(): void {
    if (!this.established || this.closed) return;
    while (this.sent < this.out.length) {
      const inFlight = seqDiff(this.sndNxt, this.sndUna);
      const room = this.sndWnd - inFlight;
      if (room <= 0) break;
      const size = Math.min(this.mss, this.out.length - this.sent, room);
      const payload = this.out.subarray(this.sent, this.sent + size);
      this.emit(ACK | PSH, this.sndNxt, payload);
      this.sent += size;
      this.advance(size);
      this.arm();
    }
    if (this.socketEnded && !this.finAcked && !this.finInFlight() && this.sent === this.out.length) this.sendFin();
  }

  private advance(n: number): void {
    this.sndNxt = (this.sndNxt + n) >>> 0;
    if (seqDiff(this.sndNxt, this.sndMax) > 0) this.sndMax = this.sndNxt;
  }

  private finInFlight(): boolean {
    return this.finSeq !== undefined && seqDiff(this.sndNxt, this.finSeq) > 0;
  }

  private sendFin(): void {
    this.finSeq = this.sndNxt;
    this.emit(FIN | ACK);
    this.advance(1);
    this.arm();
  }

  private arm(): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => this.retransmit(), RTO_MS * 2 ** Math.min(this.retries, 4));
    this.timer.unref();
  }

  private disarm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Go-back-N: everything unacknowledged, from sndUna. */
  private retransmit(): void {
    this.timer = undefined;
    if (this.closed) return;
    if (++this.retries > MAX_RETRIES) return this.abort(true);
    if (!this.established) {
      this.emit(SYN | ACK, this.sndUna, Buffer.alloc(0), true);
    } else {
      this.sndNxt = this.sndUna;
      this.sent = 0;
      // Resend one segment (or the FIN); the ACK it brings restarts the pump.
      if (this.out.length) {
        const size = Math.min(this.mss, this.out.length, Math.max(1, this.sndWnd));
        this.emit(ACK | PSH, this.sndNxt, this.out.subarray(0, size));
        this.sent = size;
        this.advance(size);
      } else if (this.finSeq !== undefined && !this.finAcked) {
        this.sendFin();
        return;
      }
    }
    this.arm();
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    this.disarm();
    this.socket.destroy();
    this.onClose();
  }

  /** Ends the connection at once; with `reset`, the guest is told (RST). */
  abort(reset: boolean): void {
    if (this.closed) return;
    if (reset) {
      this.owner.counters.reset++;
      this.emit(RST | ACK);
    }
    this.closed = true;
    this.disarm();
    this.socket.destroy();
    this.onClose();
  }
}
