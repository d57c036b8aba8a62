/**
 * The parts of the Linux FUSE kernel protocol (include/uapi/linux/fuse.h,
 * protocol 7.x) that a read-only file system with one file needs: request
 * parsing with length checks, and reply encoding. All integers are
 * little-endian on the x86_64/arm64 hosts hostme runs on (the protocol uses
 * host order; hostme refuses to mount on a big-endian host).
 */
import { HostmeError } from '../errors.js';

export const FUSE_KERNEL_VERSION = 7;
/** The minor version hostme speaks (7.28 brought max_pages, 7.33 FOPEN_NOFLUSH; nothing newer is used). */
export const FUSE_MINOR = 33;
export const FUSE_ROOT_ID = 1n;

export const OP = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  OPEN: 14,
  READ: 15,
  STATFS: 17,
  RELEASE: 18,
  FLUSH: 25,
  INIT: 26,
  INTERRUPT: 36,
  DESTROY: 38,
  BATCH_FORGET: 42,
} as const;

export const ERRNO = { ENOENT: 2, EIO: 5, EBADF: 9, EACCES: 13, EISDIR: 21, EINVAL: 22, EROFS: 30, ENOSYS: 38, EPROTO: 71 } as const;

export const FOPEN_KEEP_CACHE = 1 << 1;
/** 7.33 (Linux 5.12): no FLUSH at close(), see OneFileServer OPEN. */
export const FOPEN_NOFLUSH = 1 << 5;
export const FUSE_ASYNC_READ = 1 << 0;
export const FUSE_MAX_PAGES = 1 << 22;

export const IN_HEADER = 40;
export const OUT_HEADER = 16;
const INIT_IN = 16; // major, minor, max_readahead, flags (the 7.36 extension is optional)
const READ_IN = 40;
const OPEN_IN = 8;
const GETATTR_IN = 16;
const INTERRUPT_IN = 8;
const FORGET_IN = 8;
const ATTR = 88;

export interface RequestHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  uid: number;
  gid: number;
  pid: number;
}

export interface Request {
  header: RequestHeader;
  body: Buffer;
}

/** Splits one message read from /dev/fuse; throws 'fuse-protocol' when the kernel's length disagrees with what arrived. */
export function parseRequest(message: Buffer): Request {
  if (message.length < IN_HEADER) throw protocolError(`request of ${message.length} bytes is shorter than its header`);
  const header: RequestHeader = {
    len: message.readUInt32LE(0),
    opcode: message.readUInt32LE(4),
    unique: message.readBigUInt64LE(8),
    nodeid: message.readBigUInt64LE(16),
    uid: message.readUInt32LE(24),
    gid: message.readUInt32LE(28),
    pid: message.readUInt32LE(32),
  };
  if (header.len !== message.length) throw protocolError(`request says ${header.len} bytes and ${message.length} arrived`);
  return { header, body: message.subarray(IN_HEADER) };
}

function need(body: Buffer, bytes: number, what: string): void {
  if (body.length < bytes) throw protocolError(`${what} body of ${body.length} bytes, at least ${bytes} expected`);
}

export function parseInit(body: Buffer): { major: number; minor: number; maxReadahead: number; flags: number } {
  need(body, INIT_IN, 'INIT');
  return { major: body.readUInt32LE(0), minor: body.readUInt32LE(4), maxReadahead: body.readUInt32LE(8), flags: body.readUInt32LE(12) };
}

export function parseRead(body: Buffer): { fh: bigint; offset: bigint; size: number } {
  need(body, READ_IN, 'READ');
  return { fh: body.readBigUInt64LE(0), offset: body.readBigUInt64LE(8), size: body.readUInt32LE(16) };
}

export function parseOpen(body: Buffer): { flags: number } {
  need(body, OPEN_IN, 'OPEN');
  return { flags: body.readUInt32LE(0) };
}

export function checkGetattr(body: Buffer): void {
  need(body, GETATTR_IN, 'GETATTR');
}

export function parseInterrupt(body: Buffer): bigint {
  need(body, INTERRUPT_IN, 'INTERRUPT');
  return body.readBigUInt64LE(0);
}

export function checkForget(body: Buffer): void {
  need(body, FORGET_IN, 'FORGET');
}

/** A LOOKUP's name: NUL-terminated, no slash, at most 255 bytes. */
export function parseName(body: Buffer): string {
  const end = body.indexOf(0);
  if (end < 0 || end > 255) throw protocolError('LOOKUP name without a terminating NUL within 255 bytes');
  const name = body.subarray(0, end).toString('latin1');
  if (name.includes('/')) throw protocolError('LOOKUP name with a slash');
  return name;
}

export function replyHeader(unique: bigint, error: number, bodyLength: number): Buffer {
  const out = Buffer.alloc(OUT_HEADER);
  out.writeUInt32LE(OUT_HEADER + bodyLength, 0);
  out.writeInt32LE(error === 0 ? 0 : -error, 4);
  out.writeBigUInt64LE(unique, 8);
  return out;
}

export interface InitReply {
  minor: number;
  maxReadahead: number;
  flags: number;
  maxWrite: number;
  maxPages: number;
  maxBackground: number;
}

export function encodeInitOut(reply: InitReply): Buffer {
  const out = Buffer.alloc(64);
  out.writeUInt32LE(FUSE_KERNEL_VERSION, 0);
  out.writeUInt32LE(reply.minor, 4);
  out.writeUInt32LE(reply.maxReadahead, 8);
  out.writeUInt32LE(reply.flags, 12);
  out.writeUInt16LE(reply.maxBackground, 16);
  out.writeUInt16LE(Math.floor((reply.maxBackground * 3) / 4), 18); // congestion_threshold
  out.writeUInt32LE(reply.maxWrite, 20);
  out.writeUInt32LE(1, 24); // time_gran: 1 ns
  out.writeUInt16LE(reply.maxPages, 28);
  return out;
}

/** A minor version below 7.23 expects the 24-byte init_out (FUSE_COMPAT_22_INIT_OUT_SIZE). */
export function initOutFor(minor: number, full: Buffer): Buffer {
  return minor < 23 ? full.subarray(0, 24) : full;
}

export interface Attr {
  ino: bigint;
  size: bigint;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  mtimeSec: bigint;
}

function writeAttr(out: Buffer, at: number, a: Attr): void {
  out.writeBigUInt64LE(a.ino, at);
  out.writeBigUInt64LE(a.size, at + 8);
  out.writeBigUInt64LE((a.size + 511n) / 512n, at + 16); // blocks
  for (const field of [24, 32, 40]) out.writeBigUInt64LE(a.mtimeSec, at + field); // atime, mtime, ctime
  out.writeUInt32LE(a.mode, at + 60);
  out.writeUInt32LE(a.nlink, at + 64);
  out.writeUInt32LE(a.uid, at + 68);
  out.writeUInt32LE(a.gid, at + 72);
  out.writeUInt32LE(4096, at + 80); // blksize
}

/** fuse_attr_out: the attributes may be cached this long (the file never changes). */
export function encodeAttrOut(a: Attr, validSec: bigint): Buffer {
  const out = Buffer.alloc(16 + ATTR);
  out.writeBigUInt64LE(validSec, 0);
  writeAttr(out, 16, a);
  return out;
}

/** fuse_entry_out for a LOOKUP. */
export function encodeEntryOut(a: Attr, validSec: bigint): Buffer {
  const out = Buffer.alloc(40 + ATTR);
  out.writeBigUInt64LE(a.ino, 0); // nodeid
  out.writeBigUInt64LE(1n, 8); // generation
  out.writeBigUInt64LE(validSec, 16); // entry_valid
  out.writeBigUInt64LE(validSec, 24); // attr_valid
  writeAttr(out, 40, a);
  return out;
}

export function encodeOpenOut(fh: bigint, openFlags: number): Buffer {
  const out = Buffer.alloc(16);
  out.writeBigUInt64LE(fh, 0);
  out.writeUInt32LE(openFlags, 8);
  return out;
}

/** fuse_statfs_out: one file of `size` bytes, nothing free. */
export function encodeStatfsOut(size: bigint): Buffer {
  const out = Buffer.alloc(80);
  out.writeBigUInt64LE((size + 4095n) / 4096n, 0); // blocks
  out.writeBigUInt64LE(1n, 24); // files
  out.writeUInt32LE(4096, 40); // bsize
  out.writeUInt32LE(255, 44); // namelen
  out.writeUInt32LE(4096, 48); // frsize
  return out;
}

export function protocolError(message: string): HostmeError {
  return new HostmeError('fuse-protocol', `FUSE: ${message}`, {});
}
