/**
 * NBD wire protocol: constants and small encoders/decoders, written from the
 * NBD protocol document (NetworkBlockDevice/nbd doc/proto.md). All integers
 * are big-endian ("network byte order"). Nothing here does I/O.
 */

// ---- Magics -----------------------------------------------------------------

/** "NBDMAGIC": first 8 bytes the server sends. */
export const NBD_INIT_MAGIC = 0x4e42444d41474943n;
/** "IHAVEOPT": newstyle marker, also the prefix of every option request. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
/** Prefix of every option reply. */
export const NBD_OPT_REPLY_MAGIC = 0x3e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;

// ---- Handshake flags (server, 16 bits) and client flags (32 bits) ----------

export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// ---- Transmission flags (16 bits) -------------------------------------------

export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// ---- Options ----------------------------------------------------------------

export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_PEEK_EXPORT = 4;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// ---- Option reply types -----------------------------------------------------

export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
const REP_ERR = 0x80000000;
export const NBD_REP_ERR_UNSUP = REP_ERR + 1;
export const NBD_REP_ERR_POLICY = REP_ERR + 2;
export const NBD_REP_ERR_INVALID = REP_ERR + 3;
export const NBD_REP_ERR_PLATFORM = REP_ERR + 4;
export const NBD_REP_ERR_TLS_REQD = REP_ERR + 5;
export const NBD_REP_ERR_UNKNOWN = REP_ERR + 6;
export const NBD_REP_ERR_SHUTDOWN = REP_ERR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = REP_ERR + 8;
export const NBD_REP_ERR_TOO_BIG = REP_ERR + 9;

export function isReplyError(type: number): boolean {
  return (type & REP_ERR) !== 0;
}

// ---- NBD_REP_INFO item types ------------------------------------------------

export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// ---- Commands and command flags ---------------------------------------------

export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;
export const NBD_CMD_RESIZE = 8;

export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

// ---- Transmission error numbers ---------------------------------------------

export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/** Map a BlockDeviceError errno name to the NBD error number. Unknown → EIO. */
export function nbdErrno(errno: string | undefined): number {
  switch (errno) {
    case 'EPERM':
      return NBD_EPERM;
    case 'EIO':
      return NBD_EIO;
    case 'ENOSPC':
      return NBD_ENOSPC;
    case 'EINVAL':
      return NBD_EINVAL;
    case 'ENOTSUP':
      return NBD_ENOTSUP;
    default:
      return NBD_EIO;
  }
}

// ---- Sizes ------------------------------------------------------------------

export const HANDSHAKE_LENGTH = 18;
export const CLIENT_FLAGS_LENGTH = 4;
export const OPTION_HEADER_LENGTH = 16;
export const OPTION_REPLY_HEADER_LENGTH = 20;
export const REQUEST_LENGTH = 28;
export const SIMPLE_REPLY_LENGTH = 16;
/** Spec: strings (export names, messages) MUST be no longer than 4096 bytes. */
export const MAX_STRING_LENGTH = 4096;

// ---- Encoders ---------------------------------------------------------------

/** S: NBDMAGIC, IHAVEOPT, 16-bit handshake flags. */
export function encodeHandshake(handshakeFlags: number): Buffer {
  const b = Buffer.allocUnsafe(HANDSHAKE_LENGTH);
  b.writeBigUInt64BE(NBD_INIT_MAGIC, 0);
  b.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}

/** C: 32-bit client flags (used by tests and clients). */
export function encodeClientFlags(flags: number): Buffer {
  const b = Buffer.allocUnsafe(CLIENT_FLAGS_LENGTH);
  b.writeUInt32BE(flags >>> 0, 0);
  return b;
}

/** C: IHAVEOPT, option, length, data (used by tests and clients). */
export function encodeOption(option: number, data: Uint8Array = new Uint8Array(0)): Buffer {
  const b = Buffer.allocUnsafe(OPTION_HEADER_LENGTH + data.length);
  b.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(data.length, 12);
  b.set(data, OPTION_HEADER_LENGTH);
  return b;
}

/** S: option reply magic, option, reply type, length, data. */
export function encodeOptionReply(option: number, type: number, data: Uint8Array = new Uint8Array(0)): Buffer {
  const b = Buffer.allocUnsafe(OPTION_REPLY_HEADER_LENGTH + data.length);
  b.writeBigUInt64BE(NBD_OPT_REPLY_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(type >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  b.set(data, OPTION_REPLY_HEADER_LENGTH);
  return b;
}

/** Reply data of NBD_REP_SERVER: 32-bit name length, name, optional description. */
export function encodeServerReplyData(name: string, details = ''): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(details, 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}

/** NBD_REP_INFO data for NBD_INFO_EXPORT: type, 64-bit size, 16-bit transmission flags. */
export function encodeInfoExport(size: number, transmissionFlags: number): Buffer {
  const b = Buffer.allocUnsafe(12);
  b.writeUInt16BE(NBD_INFO_EXPORT, 0);
  b.writeBigUInt64BE(BigInt(size), 2);
  b.writeUInt16BE(transmissionFlags, 10);
  return b;
}

/** NBD_REP_INFO data for NBD_INFO_NAME or NBD_INFO_DESCRIPTION: type then the string. */
export function encodeInfoString(type: typeof NBD_INFO_NAME | typeof NBD_INFO_DESCRIPTION, text: string): Buffer {
  const s = Buffer.from(text, 'utf8');
  const b = Buffer.allocUnsafe(2 + s.length);
  b.writeUInt16BE(type, 0);
  s.copy(b, 2);
  return b;
}

/** NBD_REP_INFO data for NBD_INFO_BLOCK_SIZE: type, minimum, preferred, maximum. */
export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  const b = Buffer.allocUnsafe(14);
  b.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  b.writeUInt32BE(minimum, 2);
  b.writeUInt32BE(preferred, 6);
  b.writeUInt32BE(maximum, 10);
  return b;
}

/** Reply to NBD_OPT_EXPORT_NAME: size, transmission flags, and 124 zero bytes unless NO_ZEROES. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(noZeroes ? 10 : 134);
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}

/** S: simple reply header (magic, error, handle). */
export function encodeSimpleReply(error: number, handle: bigint): Buffer {
  return writeSimpleReply(Buffer.allocUnsafe(SIMPLE_REPLY_LENGTH), error, handle);
}

/** Write a simple reply header into the first 16 bytes of `b` (a reply buffer with the payload behind it). */
export function writeSimpleReply(b: Buffer, error: number, handle: bigint): Buffer {
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error >>> 0, 4);
  b.writeBigUInt64BE(handle, 8);
  return b;
}

export interface NbdRequest {
  flags: number;
  type: number;
  handle: bigint;
  /** Offset as a JS number; offsets above 2^53 decode to Infinity (always out of range). */
  offset: number;
  length: number;
}

/** C: request header (magic, flags, type, handle, offset, length) — used by tests and clients. */
export function encodeRequest(req: NbdRequest): Buffer {
  const b = Buffer.allocUnsafe(REQUEST_LENGTH);
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(req.flags, 4);
  b.writeUInt16BE(req.type, 6);
  b.writeBigUInt64BE(req.handle, 8);
  b.writeBigUInt64BE(BigInt(req.offset), 16);
  b.writeUInt32BE(req.length, 24);
  return b;
}

/** Decode a 28-byte request header; returns null when the magic is wrong. */
export function decodeRequest(b: Uint8Array): NbdRequest | null {
  const v = new DataView(b.buffer, b.byteOffset, REQUEST_LENGTH);
  if (v.getUint32(0) !== NBD_REQUEST_MAGIC) return null;
  const offset = v.getBigUint64(16);
  return {
    flags: v.getUint16(4),
    type: v.getUint16(6),
    handle: v.getBigUint64(8),
    offset: offset <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(offset) : Infinity,
    length: v.getUint32(24),
  };
}

export interface OptionHeader {
  option: number;
  length: number;
}

/** Decode a 16-byte option header; returns null when the IHAVEOPT magic is wrong. */
export function decodeOptionHeader(b: Uint8Array): OptionHeader | null {
  const v = new DataView(b.buffer, b.byteOffset, OPTION_HEADER_LENGTH);
  if (v.getBigUint64(0) !== NBD_OPTS_MAGIC) return null;
  return { option: v.getUint32(8), length: v.getUint32(12) };
}

export interface InfoRequest {
  name: string;
  /** NBD_INFO_* types the client asked for. */
  requests: number[];
}

/** Decode NBD_OPT_INFO / NBD_OPT_GO data; returns null when lengths are inconsistent. */
export function decodeInfoRequest(data: Uint8Array): InfoRequest | null {
  if (data.length < 6) return null;
  const v = new DataView(data.buffer, data.byteOffset, data.length);
  const nameLength = v.getUint32(0);
  if (nameLength > MAX_STRING_LENGTH || 4 + nameLength + 2 > data.length) return null;
  const count = v.getUint16(4 + nameLength);
  if (data.length !== 4 + nameLength + 2 + 2 * count) return null;
  const name = Buffer.from(data.buffer, data.byteOffset + 4, nameLength).toString('utf8');
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(v.getUint16(4 + nameLength + 2 + 2 * i));
  return { name, requests };
}

/** Encode NBD_OPT_INFO / NBD_OPT_GO data (used by tests and clients). */
export function encodeInfoRequest(name: string, requests: number[] = []): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length + 2 + 2 * requests.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(requests.length, 4 + n.length);
  requests.forEach((r, i) => b.writeUInt16BE(r, 4 + n.length + 2 + 2 * i));
  return b;
}

export function commandName(type: number): string {
  switch (type) {
    case NBD_CMD_READ:
      return 'read';
    case NBD_CMD_WRITE:
      return 'write';
    case NBD_CMD_DISC:
      return 'disc';
    case NBD_CMD_FLUSH:
      return 'flush';
    case NBD_CMD_TRIM:
      return 'trim';
    case NBD_CMD_WRITE_ZEROES:
      return 'writeZeroes';
    default:
      return 'other';
  }
}
