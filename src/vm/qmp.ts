/**
 * A small QMP (QEMU Machine Protocol) client: JSON objects, one per line, over
 * a unix socket. The server speaks first with a greeting ({"QMP": {...}}); the
 * client must send `qmp_capabilities` before anything else. Commands are
 * {"execute", "arguments", "id"}; replies are {"return", "id"} or
 * {"error": {"class", "desc"}, "id"}; asynchronous {"event", "data",
 * "timestamp"} messages may arrive at any time.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { HostmeError } from '../errors.js';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpGreeting {
  version?: { qemu?: { major: number; minor: number; micro: number }; package?: string };
  capabilities?: string[];
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
  command: string;
}

export interface QmpClientEvents {
  event: [QmpEvent];
  close: [];
}

export class QmpClient extends EventEmitter<QmpClientEvents> {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private isClosed = false;
  greeting: QmpGreeting = {};

  private constructor(private readonly socket: net.Socket) {
    super();
  }

  /**
   * Connects to a QMP unix socket, reads the greeting and negotiates
   * capabilities. Rejects with HostmeError 'qmp-failed' on any failure.
   */
  static async connect(socketPath: string, options: { timeoutMs?: number } = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? 5000;
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(socketPath);
      const onError = (err: Error) => {
        s.destroy();
        reject(new HostmeError('qmp-failed', `Cannot connect to QMP socket ${socketPath}: ${err.message}`, { socketPath }, { cause: err }));
      };
      s.once('error', onError);
      s.once('connect', () => {
        s.off('error', onError);
        resolve(s);
      });
    });
    const client = new QmpClient(socket);
    try {
      client.greeting = await client.attach(timeoutMs);
      await client.execute('qmp_capabilities', undefined, { timeoutMs });
    } catch (err) {
      client.destroy();
      throw err;
    }
    return client;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Wires the socket up and resolves with the server's greeting. */
  private attach(timeoutMs: number): Promise<QmpGreeting> {
    return new Promise<QmpGreeting>((resolve, reject) => {
      let greeted = false;
      const timer = setTimeout(() => {
        if (!greeted) reject(new HostmeError('qmp-failed', `No QMP greeting within ${timeoutMs} ms`, {}));
      }, timeoutMs);
      this.socket.setEncoding('utf8');
      this.socket.on('data', (chunk: string) => {
        this.buffer += chunk;
        let nl: number;
        while ((nl = this.buffer.indexOf('\n')) >= 0) {
          const line = this.buffer.slice(0, nl).trim();
          this.buffer = this.buffer.slice(nl + 1);
          if (!line) continue;
          let msg: Record<string, unknown>;
          try {
            msg = JSON.parse(line) as Record<string, unknown>;
          } catch {
            continue; // not JSON: ignore rather than kill the session
          }
          if (!greeted && 'QMP' in msg) {
            greeted = true;
            clearTimeout(timer);
            resolve((msg.QMP ?? {}) as QmpGreeting);
            continue;
          }
          this.dispatch(msg);
        }
      });
      this.socket.on('error', () => {
        /* 'close' follows and fails whatever is pending */
      });
      this.socket.on('close', () => {
        clearTimeout(timer);
        if (!greeted) reject(new HostmeError('qmp-failed', 'QMP socket closed before the greeting', {}));
        this.markClosed();
      });
    });
  }

  private dispatch(msg: Record<string, unknown>): void {
    if (typeof msg.event === 'string') {
      this.emit('event', msg as unknown as QmpEvent);
      return;
    }
    const id = msg.id === undefined ? undefined : String(msg.id);
    if (id === undefined) return;
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (p.timer) clearTimeout(p.timer);
    if ('error' in msg) {
      const e = (msg.error ?? {}) as { class?: string; desc?: string };
      p.reject(
        new HostmeError('qmp-error', `QMP command ${p.command} failed: ${e.desc ?? 'unknown error'}`, {
          command: p.command,
          errorClass: e.class,
        }),
      );
    } else {
      p.resolve(msg.return);
    }
  }

  private markClosed(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      if (p.timer) clearTimeout(p.timer);
      p.reject(new HostmeError('qmp-closed', `QMP connection closed before ${p.command} answered`, { command: p.command }));
    }
    this.emit('close');
  }

  /** Runs a QMP command and resolves with its `return` value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, options: { timeoutMs?: number } = {}): Promise<T> {
    if (this.isClosed) {
      return Promise.reject(new HostmeError('qmp-closed', `QMP connection is closed (command ${command})`, { command }));
    }
    const id = `hostme-${this.nextId++}`;
    const msg: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) msg.arguments = args;
    return new Promise<T>((resolve, reject) => {
      const timeoutMs = options.timeoutMs;
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              if (this.pending.delete(id)) {
                reject(new HostmeError('qmp-timeout', `QMP command ${command} got no answer within ${timeoutMs} ms`, { command }));
              }
            }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer, command });
      this.socket.write(JSON.stringify(msg) + '\n');
    });
  }

  /** Resolves with the next event of that name (optionally bounded in time). */
  waitForEvent(name: string, timeoutMs?: number): Promise<QmpEvent> {
    return new Promise<QmpEvent>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onEvent = (ev: QmpEvent) => {
        if (ev.event !== name) return;
        cleanup();
        resolve(ev);
      };
      const onClose = () => {
        cleanup();
        reject(new HostmeError('qmp-closed', `QMP connection closed while waiting for ${name}`, { event: name }));
      };
      const cleanup = () => {
        if (timer) clearTimeout(timer);
        this.off('event', onEvent);
        this.off('close', onClose);
      };
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          cleanup();
          reject(new HostmeError('qmp-timeout', `No QMP ${name} event within ${timeoutMs} ms`, { event: name }));
        }, timeoutMs);
      }
      this.on('event', onEvent);
      this.on('close', onClose);
    });
  }

  /** Closes the connection; pending commands fail with 'qmp-closed'. */
  async close(): Promise<void> {
    if (this.isClosed) return;
    await new Promise<void>((resolve) => {
      this.socket.once('close', () => resolve());
      this.socket.end();
      // A peer that never closes its side must not keep us waiting.
      setTimeout(() => this.socket.destroy(), 500).unref();
    });
  }

  private destroy(): void {
    this.socket.destroy();
    this.markClosed();
  }
}
