/**
 * 9P2000.L wire format: little-endian integers, strings as a 2-byte length
 * and UTF-8 bytes, qids as type[1] version[4] path[8]. A message is
 * size[4] type[1] tag[2] body; size counts itself.
 */

export const enum T {
  Rlerror = 7,
  Tstatfs = 8,
  Tlopen = 12,
  Tlcreate = 14,
  Tsymlink = 16,
  Tmknod = 18,
  Trename = 20,
  Treadlink = 22,
  Tgetattr = 24,
  Tsetattr = 26,
  Txattrwalk = 30,
  Txattrcreate = 32,
  Treaddir = 40,
  Tfsync = 50,
  Tlock = 52,
  Tgetlock = 54,
  Tlink = 70,
  Tmkdir = 72,
  Trenameat = 74,
  Tunlinkat = 76,
  Tversion = 100,
  Tauth = 102,
  Tattach = 104,
  Tflush = 108,
  Twalk = 110,
  Tread = 116,
  Twrite = 118,
  Tclunk = 120,
  Tremove = 122,
}

export const NOFID = 0xffffffff;
export const HEADER = 7;

export interface Qid { type: number; version: number; path: bigint }
export const QT_DIR = 0x80;
export const QT_SYMLINK = 0x02;
export const QT_FILE = 0;

/** Thrown by Reader when a message is shorter than its fields say. */
export class ShortMessage extends Error {}

export class Reader {
  private at = 0;
  constructor(private readonly buf: Buffer) {}
  private need(n: number): void {
    if (this.at + n > this.buf.length) throw new ShortMessage('short message');
  }
  u8(): number { this.need(1); return this.buf.readUInt8(this.at++); }
  u16(): number { this.need(2); const v = this.buf.readUInt16LE(this.at); this.at += 2; return v; }
  u32(): number { this.need(4); const v = this.buf.readUInt32LE(this.at); this.at += 4; return v; }
  u64(): bigint { this.need(8); const v = this.buf.readBigUInt64LE(this.at); this.at += 8; return v; }
  str(): string {
    const n = this.u16();
    this.need(n);
    const s = this.buf.toString('utf8', this.at, this.at + n);
    this.at += n;
    return s;
  }
  bytes(n: number): Buffer { this.need(n); const b = this.buf.subarray(this.at, this.at + n); this.at += n; return b; }
}

export class Writer {
  private parts: Buffer[] = [];
  private length = 0;
  private push(b: Buffer): this { this.parts.push(b); this.length += b.length; return this; }
  u8(v: number): this { const b = Buffer.alloc(1); b.writeUInt8(v); return this.push(b); }
  u16(v: number): this { const b = Buffer.alloc(2); b.writeUInt16LE(v); return this.push(b); }
  u32(v: number): this { const b = Buffer.alloc(4); b.writeUInt32LE(v >>> 0); return this.push(b); }
  u64(v: bigint | number): this { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v))); return this.push(b); }
  str(s: string): this { const b = Buffer.from(s, 'utf8'); return this.u16(b.length).push(b); }
  qid(q: Qid): this { return this.u8(q.type).u32(q.version).u64(q.path); }
  raw(b: Buffer): this { return this.push(b); }
  get size(): number { return this.length; }
  /** The whole message: size[4] type[1] tag[2] and this body. */
  message(type: number, tag: number): Buffer {
    const head = Buffer.alloc(HEADER);
    head.writeUInt32LE(HEADER + this.length, 0);
    head.writeUInt8(type, 4);
    head.writeUInt16LE(tag, 5);
    return Buffer.concat([head, ...this.parts]);
  }
}
