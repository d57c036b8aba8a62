/**
 * NbdServer: serves any BlockDevice over the NBD protocol (fixed newstyle
 * handshake, simple replies). It knows nothing about what is behind the
 * device. One Connection object per client socket; every failure inside a
 * connection is contained there (reported through onError, connection closed).
 */
import net from 'node:net';
import type { BlockDevice } from '../device/block-device.js';
import { HostmeError, isHostmeError } from '../errors.js';
import * as P from './protocol.js';
import { ReplyBufferPool } from './reply-pool.js';

export interface NbdServerOptions {
  /** Exports by name, or a single device exported under the default name ''. */
  exports: Map<string, BlockDevice> | BlockDevice;
  /** Optional human-readable descriptions (NBD_INFO_DESCRIPTION / NBD_OPT_LIST details). */
  descriptions?: Map<string, string>;
  /** Called for unexpected failures (device errors other than BlockDeviceError, protocol violations). */
  onError?: (err: unknown, context: Record<string, unknown>) => void;
  /** Maximum READ/WRITE payload (advertised as the maximum block size). Default 32 MiB. */
  maxRequestBytes?: number;
  /** Maximum requests in flight per connection before we stop reading. Default 32. */
  maxInFlight?: number;
  /** Maximum payload bytes in flight per connection before we stop reading. Default 64 MiB. */
  maxInFlightBytes?: number;
}

export type ListenTarget = string | { host?: string; port: number };

export interface NbdStats {
  connectionsTotal: number;
  connectionsActive: number;
  requests: { read: number; write: number; flush: number; trim: number; writeZeroes: number; disc: number; other: number };
  bytesRead: number;
  bytesWritten: number;
  /** Requests answered with a non-zero NBD error. */
  requestErrors: number;
  /** Connections dropped for protocol violations (bad magic, bad flags, ...). */
  protocolErrors: number;
}

const DEFAULT_MAX_REQUEST = 32 * 1024 * 1024;
/** Option payloads above this are discarded and refused (names are ≤ 4096 bytes anyway). */
const MAX_OPTION_DATA = 64 * 1024;
/** Stop parsing new requests while more than this many reply bytes are queued on the socket. */
const OUTPUT_HIGH_WATER = 8 * 1024 * 1024;

/** A receive buffer: a queue of chunks; take() copies only when a message spans chunks. */
class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0;
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Remove and return exactly n bytes (caller checked length >= n). */
  take(n: number): Buffer {
    const first = this.chunks[0];
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.advance(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0];
      const k = Math.min(n - filled, c.length - this.head);
      c.copy(out, filled, this.head, this.head + k);
      filled += k;
      this.advance(k);
    }
    return out;
  }

  /** Drop up to n bytes; returns how many were dropped. */
  skip(n: number): number {
    let dropped = 0;
    while (dropped < n && this.length > 0) {
      const k = Math.min(n - dropped, this.chunks[0].length - this.head);
      this.advance(k);
      dropped += k;
    }
    return dropped;
  }

  private advance(k: number): void {
    this.head += k;
    this.length -= k;
    if (this.head === this.chunks[0].length) {
      this.chunks.shift();
      this.head = 0;
    }
  }
}

function errnoOf(err: unknown): string | undefined {
  if (isHostmeError(err) && typeof err.context.errno === 'string') return err.context.errno;
  return undefined;
}

export class NbdServer {
  readonly stats: NbdStats = {
    connectionsTotal: 0,
    connectionsActive: 0,
    requests: { read: 0, write: 0, flush: 0, trim: 0, writeZeroes: 0, disc: 0, other: 0 },
    bytesRead: 0,
    bytesWritten: 0,
    requestErrors: 0,
    protocolErrors: 0,
  };
  /** @internal */ readonly exports: Map<string, BlockDevice>;
  /** @internal */ readonly descriptions: Map<string, string>;
  /** @internal */ readonly maxRequestBytes: number;
  /** @internal */ readonly maxInFlight: number;
  /** @internal */ readonly maxInFlightBytes: number;
  private readonly onErrorCallback?: NbdServerOptions['onError'];
  private server?: net.Server;
  private readonly connections = new Set<Connection>();
  private closing = false;

  constructor(opts: NbdServerOptions) {
    this.exports = opts.exports instanceof Map ? new Map(opts.exports) : new Map([['', opts.exports]]);
    this.descriptions = opts.descriptions ?? new Map();
    this.onErrorCallback = opts.onError;
    const max = opts.maxRequestBytes ?? DEFAULT_MAX_REQUEST;
    if (!Number.isInteger(max) || max < 512 || max > 0x7fffffff) {
      throw new HostmeError('nbd-bad-option', `maxRequestBytes must be an integer in [512, 2^31), got ${max}`, { maxRequestBytes: max });
    }
    this.maxRequestBytes = max;
    this.maxInFlight = Math.max(1, opts.maxInFlight ?? 32);
    this.maxInFlightBytes = Math.max(max, opts.maxInFlightBytes ?? 64 * 1024 * 1024);
    for (const name of this.exports.keys()) {
      if (Buffer.byteLength(name, 'utf8') > P.MAX_STRING_LENGTH) {
        throw new HostmeError('nbd-bad-option', 'export names must be at most 4096 bytes', { name: name.slice(0, 64) });
      }
    }
  }

  /** Start listening on a unix socket path or a TCP {host, port}. */
  listen(target: ListenTarget): Promise<void> {
    if (this.server) return Promise.reject(new HostmeError('nbd-already-listening', 'NbdServer.listen() was already called'));
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.accept(socket));
    this.server = server;
    // A listening-socket error after startup must not become an uncaught 'error' event.
    server.on('error', (err) => this.reportError(err, { phase: 'listen' }));
    return new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        reject(new HostmeError('nbd-listen-failed', `cannot listen on ${JSON.stringify(target)}: ${err.message}`, { target }, { cause: err }));
      };
      server.once('error', onError);
      const done = (): void => {
        server.off('error', onError);
        resolve();
      };
      if (typeof target === 'string') server.listen(target, done);
      else server.listen(target.port, target.host ?? '127.0.0.1', done);
    });
  }

  /** The bound address (useful with port 0). */
  address(): net.AddressInfo | string | null {
    return this.server?.address() ?? null;
  }

  /**
   * Stop accepting connections; let every connection finish its in-flight
   * requests (no new ones are read), then close it. Devices are not closed:
   * the caller owns them.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const server = this.server;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    await Promise.all([...this.connections].map((c) => c.shutdown()));
    await closed;
  }

  private accept(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const conn = new Connection(this, socket);
    this.connections.add(conn);
    this.stats.connectionsTotal++;
    this.stats.connectionsActive++;
    conn.closed.then(() => {
      this.connections.delete(conn);
      this.stats.connectionsActive--;
    });
    conn.start();
  }

  /** @internal */
  reportError(err: unknown, context: Record<string, unknown>): void {
    try {
      this.onErrorCallback?.(err, context);
    } catch {
      // A throwing error callback must not take the server down.
    }
  }
}

type State =
  | { kind: 'clientFlags' }
  | { kind: 'optionHeader' }
  | { kind: 'optionData'; option: number; length: number }
  | { kind: 'optionDiscard'; option: number; remaining: number }
  | { kind: 'request' }
  | { kind: 'writePayload'; req: P.NbdRequest }
  | { kind: 'writeDiscard'; req: P.NbdRequest; remaining: number; error: number }
  | { kind: 'done' };

class Connection {
  readonly closed: Promise<void>;
  private state: State = { kind: 'clientFlags' };
  private readonly queue = new ByteQueue();
  private noZeroes = false;
  private device?: BlockDevice;
  private exportName = '';
  private transmissionFlags = 0;
  private inFlight = 0;
  private inFlightBytes = 0;
  private outputBlocked = false;
  private pumping = false;
  /** No new requests are read; close once in-flight requests are answered. */
  private ending = false;
  /** Close abruptly (protocol violation) rather than with a clean end. */
  private aborting = false;
  private eof = false;
  private resolveClosed!: () => void;
  /** Reply buffers of finished reads, reused (bounded by what may be in flight). */
  private readonly replies: ReplyBufferPool;

  constructor(
    private readonly server: NbdServer,
    private readonly socket: net.Socket,
  ) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.replies = new ReplyBufferPool(Math.min(server.maxInFlightBytes, 16 * 1024 * 1024));
  }

  start(): void {
    const s = this.socket;
    s.on('data', (chunk: Buffer) => {
      this.queue.push(chunk);
      this.pump();
    });
    s.on('drain', () => {
      this.outputBlocked = false;
      this.pump();
    });
    s.on('end', () => {
      // Client half-closed: serve what it already sent, then close our side.
      this.eof = true;
      this.pump();
    });
    s.on('error', (err) => {
      // EPIPE/ECONNRESET from a vanished client is normal; report anything else.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EPIPE' && code !== 'ECONNRESET') this.server.reportError(err, { phase: 'socket' });
    });
    s.on('close', () => {
      this.state = { kind: 'done' };
      this.resolveClosed();
    });
    const flags = P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES;
    s.write(P.encodeHandshake(flags));
  }

  /** Server shutdown: read no more requests, finish in-flight ones, then close. */
  shutdown(): Promise<void> {
    if (this.device === undefined) this.socket.destroy();
    else this.finish();
    return this.closed;
  }

  // ---- Parsing ----------------------------------------------------------------

  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.step()) {
        /* keep going */
      }
    } catch (err) {
      this.protocolError('internal error while parsing', { error: String(err) });
      this.server.reportError(err, { phase: 'parse', export: this.exportName });
    } finally {
      this.pumping = false;
    }
    if (this.eof && !this.ending && !this.waitingForCapacity()) {
      // Every state that made no progress is waiting for bytes that will never come.
      this.finish();
      return;
    }
    this.updateFlow();
  }

  /** Whether we can accept a new request right now (bounds in-flight work). */
  private canStartRequest(): boolean {
    return (
      !this.outputBlocked &&
      this.inFlight < this.server.maxInFlight &&
      this.inFlightBytes < this.server.maxInFlightBytes
    );
  }

  private waitingForCapacity(): boolean {
    return this.state.kind === 'request' && this.queue.length >= P.REQUEST_LENGTH && !this.canStartRequest();
  }

  /** Pause the socket when we cannot make progress on buffered data (backpressure). */
  private updateFlow(): void {
    if (this.state.kind === 'done') return;
    const blocked = this.state.kind === 'request' && !this.canStartRequest() && this.queue.length > 0;
    if (blocked || this.ending) this.socket.pause();
    else this.socket.resume();
  }

  /** Try to consume one message; returns true if progress was made. */
  private step(): boolean {
    const st = this.state;
    const q = this.queue;
    switch (st.kind) {
      case 'clientFlags': {
        if (q.length < P.CLIENT_FLAGS_LENGTH) return false;
        const flags = q.take(P.CLIENT_FLAGS_LENGTH).readUInt32BE(0);
        if ((flags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES)) !== 0) {
          this.protocolError('client sent unknown client flags', { flags });
          return false;
        }
        this.noZeroes = (flags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
        this.state = { kind: 'optionHeader' };
        return true;
      }
      case 'optionHeader': {
        if (q.length < P.OPTION_HEADER_LENGTH) return false;
        const h = P.decodeOptionHeader(q.take(P.OPTION_HEADER_LENGTH));
        if (!h) {
          this.protocolError('bad option magic');
          return false;
        }
        if (h.length > MAX_OPTION_DATA) {
          if (h.option === P.NBD_OPT_EXPORT_NAME) {
            this.protocolError('NBD_OPT_EXPORT_NAME data too long', { length: h.length });
            return false;
          }
          this.state = { kind: 'optionDiscard', option: h.option, remaining: h.length };
        } else {
          this.state = { kind: 'optionData', option: h.option, length: h.length };
        }
        return true;
      }
      case 'optionData': {
        if (q.length < st.length) return false;
        const data = st.length === 0 ? Buffer.alloc(0) : q.take(st.length);
        this.state = { kind: 'optionHeader' };
        this.handleOption(st.option, data);
        return (this.state as State).kind !== 'done';
      }
      case 'optionDiscard': {
        const n = q.skip(st.remaining);
        st.remaining -= n;
        if (st.remaining > 0) return false;
        this.state = { kind: 'optionHeader' };
        this.optionReply(st.option, P.NBD_REP_ERR_TOO_BIG, Buffer.from('option data too large'));
        return true;
      }
      case 'request': {
        if (this.ending || !this.canStartRequest() || q.length < P.REQUEST_LENGTH) return false;
        const req = P.decodeRequest(q.take(P.REQUEST_LENGTH));
        if (!req) {
          this.protocolError('bad request magic');
          return false;
        }
        if (req.type === P.NBD_CMD_WRITE) {
          if (req.length > this.server.maxRequestBytes) {
            // Spec: the server may reply EINVAL after consuming the payload, or
            // disconnect when the length is too large to sensibly consume.
            if (req.length > 4 * this.server.maxRequestBytes) {
              this.protocolError('write payload absurdly large', { length: req.length });
              return false;
            }
            this.state = { kind: 'writeDiscard', req, remaining: req.length, error: P.NBD_EINVAL };
          } else {
            this.state = { kind: 'writePayload', req };
          }
          return true;
        }
        this.dispatch(req, undefined);
        return true;
      }
      case 'writePayload': {
        if (q.length < st.req.length) return false;
        const payload = st.req.length === 0 ? Buffer.alloc(0) : q.take(st.req.length);
        this.state = { kind: 'request' };
        this.dispatch(st.req, payload);
        return true;
      }
      case 'writeDiscard': {
        const n = q.skip(st.remaining);
        st.remaining -= n;
        if (st.remaining > 0) return false;
        this.state = { kind: 'request' };
        this.server.stats.requests.write++;
        this.server.stats.requestErrors++;
        this.sendReply(st.req.handle, st.error);
        return true;
      }
      case 'done':
        return false;
    }
  }

  // ---- Option haggling --------------------------------------------------------

  private optionReply(option: number, type: number, data?: Uint8Array): void {
    this.socket.write(P.encodeOptionReply(option, type, data));
  }

  private handleOption(option: number, data: Buffer): void {
    const exports = this.server.exports;
    switch (option) {
      case P.NBD_OPT_EXPORT_NAME: {
        const name = data.toString('utf8');
        const device = exports.get(name);
        if (!device) {
          // This option cannot return an error: the spec says terminate the session.
          this.protocolError('unknown export requested with NBD_OPT_EXPORT_NAME', { name });
          return;
        }
        this.enterTransmission(name, device);
        this.socket.write(P.encodeExportNameReply(device.size, this.transmissionFlags, this.noZeroes));
        return;
      }
      case P.NBD_OPT_ABORT:
        this.optionReply(option, P.NBD_REP_ACK);
        this.finish();
        return;
      case P.NBD_OPT_LIST:
        if (data.length !== 0) {
          this.optionReply(option, P.NBD_REP_ERR_INVALID, Buffer.from('NBD_OPT_LIST takes no data'));
          return;
        }
        for (const name of exports.keys()) {
          this.optionReply(option, P.NBD_REP_SERVER, P.encodeServerReplyData(name, this.server.descriptions.get(name) ?? ''));
        }
        this.optionReply(option, P.NBD_REP_ACK);
        return;
      case P.NBD_OPT_INFO:
      case P.NBD_OPT_GO: {
        const info = P.decodeInfoRequest(data);
        if (!info) {
          this.optionReply(option, P.NBD_REP_ERR_INVALID, Buffer.from('malformed NBD_OPT_INFO/GO data'));
          return;
        }
        const device = exports.get(info.name);
        if (!device) {
          this.optionReply(option, P.NBD_REP_ERR_UNKNOWN, Buffer.from(`no export named ${JSON.stringify(info.name)}`));
          return;
        }
        const flags = transmissionFlagsFor(device);
        if (info.requests.includes(P.NBD_INFO_NAME)) {
          this.optionReply(option, P.NBD_REP_INFO, P.encodeInfoString(P.NBD_INFO_NAME, info.name));
        }
        const description = this.server.descriptions.get(info.name);
        if (info.requests.includes(P.NBD_INFO_DESCRIPTION) && description !== undefined) {
          this.optionReply(option, P.NBD_REP_INFO, P.encodeInfoString(P.NBD_INFO_DESCRIPTION, description));
        }
        // Sent even when not requested (allowed): minimum 1 means any alignment works.
        this.optionReply(option, P.NBD_REP_INFO, P.encodeInfoBlockSize(1, preferredBlockSize(device, this.server.maxRequestBytes), this.server.maxRequestBytes));
        this.optionReply(option, P.NBD_REP_INFO, P.encodeInfoExport(device.size, flags));
        this.optionReply(option, P.NBD_REP_ACK);
        if (option === P.NBD_OPT_GO) this.enterTransmission(info.name, device);
        return;
      }
      case P.NBD_OPT_STARTTLS:
      case P.NBD_OPT_STRUCTURED_REPLY:
      case P.NBD_OPT_LIST_META_CONTEXT:
      case P.NBD_OPT_SET_META_CONTEXT:
      case P.NBD_OPT_EXTENDED_HEADERS:
      default:
        this.optionReply(option, P.NBD_REP_ERR_UNSUP);
        return;
    }
  }

  private enterTransmission(name: string, device: BlockDevice): void {
    this.exportName = name;
    this.device = device;
    this.transmissionFlags = transmissionFlagsFor(device);
    this.state = { kind: 'request' };
  }

  // ---- Transmission -----------------------------------------------------------

  private dispatch(req: P.NbdRequest, payload: Buffer | undefined): void {
    const stats = this.server.stats;
    const name = P.commandName(req.type);
    stats.requests[name as keyof NbdStats['requests']]++;
    if (req.type === P.NBD_CMD_DISC) {
      this.finish();
      return;
    }
    const bytes = req.type === P.NBD_CMD_READ || req.type === P.NBD_CMD_WRITE ? req.length : 0;
    this.inFlight++;
    this.inFlightBytes += bytes;
    let work: Promise<Uint8Array | Framed | undefined>;
    try {
      work = this.execute(req, payload);
    } catch (err) {
      work = Promise.reject(err);
    }
    work.then(
      (data) => {
        if (req.type === P.NBD_CMD_READ) stats.bytesRead += req.length;
        else if (req.type === P.NBD_CMD_WRITE) stats.bytesWritten += req.length;
        this.complete(req, bytes, 0, data);
      },
      (err: unknown) => {
        const errno = errnoOf(err);
        if (errno === undefined) {
          this.server.reportError(err, { phase: 'request', export: this.exportName, command: name, offset: req.offset, length: req.length });
        }
        stats.requestErrors++;
        this.complete(req, bytes, err instanceof RequestError ? err.nbdError : P.nbdErrno(errno), undefined);
      },
    );
  }

  private complete(req: P.NbdRequest, bytes: number, error: number, data: Uint8Array | Framed | undefined): void {
    this.inFlight--;
    this.inFlightBytes -= bytes;
    if (data instanceof Framed) this.sendFramed(req.handle, data.reply);
    else this.sendReply(req.handle, error, error === 0 ? data : undefined);
    if (this.ending) this.maybeEnd();
    else this.pump();
  }

  /** Validate and run one request; resolves with the read data for NBD_CMD_READ. */
  private async execute(req: P.NbdRequest, payload: Buffer | undefined): Promise<Uint8Array | Framed | undefined> {
    const dev = this.device!;
    const fua = (req.flags & P.NBD_CMD_FLAG_FUA) !== 0;
    const writable = (this.transmissionFlags & P.NBD_FLAG_READ_ONLY) === 0;
    const inRange = req.offset + req.length <= dev.size;
    switch (req.type) {
      case P.NBD_CMD_READ: {
        checkFlags(req, P.NBD_CMD_FLAG_FUA);
        if (req.length > this.server.maxRequestBytes) throw new RequestError(P.NBD_EINVAL);
        if (!inRange) throw new RequestError(P.NBD_EINVAL);
        if (req.length === 0) return new Uint8Array(0);
        if (dev.readInto) return this.readFramed(dev, req);
        const data = await dev.read(req.offset, req.length);
        if (data.length !== req.length) {
          throw new HostmeError('nbd-short-read', `device returned ${data.length} bytes for a ${req.length}-byte read`, { offset: req.offset, length: req.length });
        }
        return data;
      }
      case P.NBD_CMD_WRITE: {
        checkFlags(req, P.NBD_CMD_FLAG_FUA);
        if (!writable || !dev.write) throw new RequestError(P.NBD_EPERM);
        if (!inRange) throw new RequestError(P.NBD_ENOSPC);
        if (req.length > 0) await dev.write(req.offset, payload!);
        if (fua) await dev.flush?.();
        return undefined;
      }
      case P.NBD_CMD_FLUSH:
        checkFlags(req, P.NBD_CMD_FLAG_FUA);
        if (!dev.flush) throw new RequestError(P.NBD_EINVAL);
        await dev.flush();
        return undefined;
      case P.NBD_CMD_TRIM:
        checkFlags(req, P.NBD_CMD_FLAG_FUA);
        if (!writable) throw new RequestError(P.NBD_EPERM);
        if (!dev.trim) throw new RequestError(P.NBD_EINVAL);
        if (!inRange) throw new RequestError(P.NBD_EINVAL);
        if (req.length > 0) await dev.trim(req.offset, req.length);
        if (fua) await dev.flush?.();
        return undefined;
      case P.NBD_CMD_WRITE_ZEROES:
        // NO_HOLE is accepted and ignored: writeZeroes may or may not punch holes.
        checkFlags(req, P.NBD_CMD_FLAG_FUA | P.NBD_CMD_FLAG_NO_HOLE);
        if (!writable) throw new RequestError(P.NBD_EPERM);
        if (!dev.writeZeroes) throw new RequestError(P.NBD_EINVAL);
        if (!inRange) throw new RequestError(P.NBD_ENOSPC);
        if (req.length > 0) await dev.writeZeroes(req.offset, req.length);
        if (fua) await dev.flush?.();
        return undefined;
      default:
        // Unknown or unadvertised command (CACHE, BLOCK_STATUS, RESIZE, ...).
        throw new RequestError(P.NBD_EINVAL);
    }
  }

  /** Read straight into a reply buffer behind the 16 header bytes: no payload copy, one write per reply. */
  private async readFramed(dev: BlockDevice, req: P.NbdRequest): Promise<Framed> {
    const reply = this.replies.take(P.SIMPLE_REPLY_LENGTH + req.length);
    try {
      await dev.readInto!(reply.subarray(P.SIMPLE_REPLY_LENGTH), req.offset);
    } catch (err) {
      this.replies.give(reply);
      throw err;
    }
    return new Framed(reply);
  }

  private sendFramed(handle: bigint, reply: Buffer): void {
    const s = this.socket;
    if (s.destroyed || !s.writable) {
      this.replies.give(reply);
      return;
    }
    P.writeSimpleReply(reply, 0, handle);
    // Back to the pool once the socket is done with it (written, or failed).
    s.write(reply, () => this.replies.give(reply));
    if (s.writableLength > OUTPUT_HIGH_WATER) this.outputBlocked = true;
  }

  private sendReply(handle: bigint, error: number, data?: Uint8Array): void {
    const s = this.socket;
    if (s.destroyed || !s.writable) return;
    const header = P.encodeSimpleReply(error, handle);
    if (data && data.length > 0) {
      // Cork so header + payload go out in one writev, without copying the payload.
      s.cork();
      s.write(header);
      s.write(data);
      s.uncork();
    } else {
      s.write(header);
    }
    if (s.writableLength > OUTPUT_HIGH_WATER) this.outputBlocked = true;
  }

  /** Soft disconnect (NBD_CMD_DISC), client EOF or server shutdown: no new requests; close when idle. */
  private finish(): void {
    this.ending = true;
    this.socket.pause();
    this.maybeEnd();
  }

  private maybeEnd(): void {
    if (this.inFlight > 0) return;
    const s = this.socket;
    if (this.aborting) {
      s.destroy();
      return;
    }
    if (this.state.kind === 'done') return;
    this.state = { kind: 'done' };
    if (!s.destroyed) s.end(() => s.destroy());
  }

  private protocolError(message: string, context: Record<string, unknown> = {}): void {
    this.server.stats.protocolErrors++;
    this.server.reportError(new HostmeError('nbd-protocol', message, context), { phase: 'protocol', ...context });
    this.state = { kind: 'done' };
    // Let in-flight replies go out if any; new input is ignored from here on.
    this.ending = true;
    this.aborting = true;
    this.socket.pause();
    this.maybeEnd();
  }
}

/** A successful read's whole reply (header space + payload) in one pooled buffer. */
class Framed {
  constructor(readonly reply: Buffer) {}
}

/** A request rejected by the server itself with a specific NBD error. */
class RequestError extends Error {
  constructor(readonly nbdError: number) {
    super(`NBD error ${nbdError}`);
  }
}

function checkFlags(req: P.NbdRequest, allowed: number): void {
  if ((req.flags & ~allowed) !== 0) throw new RequestError(P.NBD_EINVAL);
}

/**
 * Transmission flags for an export.
 *
 * CAN_MULTI_CONN is advertised because this server keeps no per-connection
 * state or cache: every request on every connection goes straight to the one
 * shared BlockDevice object, and a BlockDevice's flush() persists every write
 * that has completed on that object, whoever issued it. So a write completed
 * on one connection is visible to reads on any other, and a FLUSH (or FUA) on
 * one connection covers writes completed on all of them — exactly the
 * guarantee the flag promises. (Read-only exports are trivially safe.)
 */
function transmissionFlagsFor(dev: BlockDevice): number {
  let flags = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_CAN_MULTI_CONN;
  const readOnly = dev.readOnly || !dev.write;
  if (readOnly) flags |= P.NBD_FLAG_READ_ONLY;
  if (dev.flush) flags |= P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_SEND_FUA;
  if (!readOnly && dev.trim) flags |= P.NBD_FLAG_SEND_TRIM;
  if (!readOnly && dev.writeZeroes) flags |= P.NBD_FLAG_SEND_WRITE_ZEROES;
  return flags;
}

/** The device block size rounded down to a power of two, within [512, max]. */
function preferredBlockSize(dev: BlockDevice, max: number): number {
  let p = 512;
  while (p * 2 <= dev.blockSize && p * 2 <= max) p *= 2;
  return p;
}
