/**
 * A read-only FUSE file system with exactly one file, served by this process
 * over /dev/fuse (docs/lazyfs.md). hostme (root) opens /dev/fuse, lets
 * mount(8) mount it with that descriptor, and answers the kernel's requests:
 * the file's bytes come from `source.read`, which may fetch them first.
 */
import { spawn } from 'node:child_process';
import { closeSync, open as openCb, read as readCb, writeSync, constants } from 'node:fs';
import { mkdir, rmdir } from 'node:fs/promises';
import { endianness } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HostmeError, errorMessage } from '../errors.js';
import * as P from './fuse-protocol.js';

const openFd = promisify(openCb);

/** What the one file holds. `read` gets a range already clipped to the file. */
export interface OneFileSource {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
}

export interface MountOptions {
  /** An empty directory (created if missing) to mount on. */
  mountpoint: string;
  /** The file's name in the mount's root. */
  fileName: string;
  /** Owner reported for the file (a confined QEMU's user); default root. */
  owner?: { uid: number; gid: number };
  /** Names the mount in /proc/self/mountinfo (the part after "hostme-lazy:"); default this pid. */
  tag?: string;
  /** A request that breaks the protocol, or a read that failed (the reply was EIO). */
  onError?: (err: unknown) => void;
}

export interface OneFileMount {
  /** The file's path (mountpoint/fileName). */
  readonly path: string;
  readonly mountpoint: string;
  /** Requests answered so far, by opcode (tests and diagnostics). */
  readonly answered: Map<number, number>;
  /** Unmounts (lazily: a process still holding the file keeps it until it closes it) and stops serving. */
  unmount(): Promise<void>;
}

export const FUSE_TYPE = 'fuse.hostme';
export const SOURCE_PREFIX = 'hostme-lazy:';
/** Largest READ the kernel sends (max_pages × 4 KiB): one chunk of 256 KiB fits in two. */
const MAX_PAGES = 64;
const MAX_READ = MAX_PAGES * 4096;
const MAX_WRITE = 4096; // writes are refused, but the kernel wants a value
/** The kernel refuses reads of /dev/fuse into buffers smaller than max_write + headers (and 8 KiB). */
const READ_BUFFER = MAX_READ + 4096;
const FILE_ID = 2n;
const ATTR_VALID_SEC = 3600n;

/** Mounts a one-file FUSE file system; throws 'lazyfs-unavailable' where /dev/fuse or mounting is not possible. */
export async function mountOneFile(source: OneFileSource, options: MountOptions): Promise<OneFileMount> {
  if (endianness() !== 'LE') throw new HostmeError('lazyfs-unavailable', 'the lazy file system speaks FUSE in little-endian only', {});
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(options.fileName)) throw new HostmeError('usage', `bad file name ${options.fileName}`, {});
  const fd = await openFd('/dev/fuse', constants.O_RDWR).catch((err: NodeJS.ErrnoException) => {
    throw new HostmeError('lazyfs-unavailable', `cannot open /dev/fuse (${err.code ?? errorMessage(err)})`, {});
  });
  try {
    await mkdir(options.mountpoint, { recursive: true, mode: 0o755 });
    const owner = options.owner ?? { uid: 0, gid: 0 };
    await runMount(fd, options.mountpoint, `${SOURCE_PREFIX}${options.tag ?? process.pid}`);
    const server = new OneFileServer(fd, source, options.fileName, owner, options.onError);
    server.serve();
    const minor = await server.initialized;
    if (minor < 33) {
      await unmountPath(options.mountpoint);
      await server.stopped;
      throw new HostmeError('lazyfs-unavailable', `the kernel speaks FUSE 7.${minor}; the lazy file needs 7.33 (Linux 5.12) for FOPEN_NOFLUSH`, {});
    }
    return {
      path: join(options.mountpoint, options.fileName),
      mountpoint: options.mountpoint,
      answered: server.answered,
      unmount: async () => {
        await unmountPath(options.mountpoint);
        await server.stopped;
        await rmdir(options.mountpoint).catch(() => undefined);
      },
    };
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

function runMount(fd: number, mountpoint: string, sourceName: string): Promise<void> {
  // No user_allow_other needed: root mounts. default_permissions is off: this file system decides (OPEN).
  // -i: no /sbin/mount.fuse helper (fuse3's would run the source name as a program).
  const args = ['-i', '-t', FUSE_TYPE, '-o', `fd=3,rootmode=40000,user_id=0,group_id=0,allow_other,max_read=${MAX_READ}`, sourceName, mountpoint];
  return runTool('mount', args, [fd]).catch((err: unknown) => {
    throw new HostmeError('lazyfs-unavailable', `cannot mount the lazy file system on ${mountpoint}: ${errorMessage(err)}`, { mountpoint });
  });
}

/** umount -l: detaches now; the kernel ends the connection (our read sees ENODEV) once nothing holds the file. */
export async function unmountPath(mountpoint: string): Promise<void> {
  await runTool('umount', ['-l', mountpoint], []).catch(() => undefined);
}

function runTool(command: string, args: string[], fds: number[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe', ...fds] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      if (stderr.length < 4096) stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new HostmeError('tool-failed', `${command} exited with ${code}: ${stderr.trim()}`, { command }));
    });
  });
}

class OneFileServer {
  readonly answered = new Map<number, number>();
  stopped: Promise<void> = Promise.resolve();
  /** Resolves with the negotiated minor version once INIT is answered (rejects if serving ends first). */
  readonly initialized: Promise<number>;
  private resolveInit: (minor: number) => void = () => {};
  private rejectInit: (err: unknown) => void = () => {};
  private initDone = false;
  private maxRead = MAX_READ;

  constructor(
    private readonly fd: number,
    private readonly source: OneFileSource,
    private readonly fileName: string,
    private readonly owner: { uid: number; gid: number },
    private readonly onError: ((err: unknown) => void) | undefined,
  ) {
    this.initialized = new Promise<number>((resolve, reject) => {
      this.resolveInit = resolve;
      this.rejectInit = reject;
    });
    this.initialized.catch(() => {});
  }

  serve(): void {
    this.stopped = this.loop().finally(() => {
      closeSync(this.fd);
      this.rejectInit(new HostmeError('lazyfs-unavailable', 'the FUSE connection ended before INIT', {}));
    });
  }

  private async loop(): Promise<void> {
    const buffer = Buffer.alloc(READ_BUFFER);
    for (;;) {
      let n: number;
      try {
        n = await new Promise<number>((resolve, reject) => readCb(this.fd, buffer, 0, buffer.length, null, (err, bytes) => (err ? reject(err) : resolve(bytes))));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'EINTR' || code === 'EAGAIN') continue; // a request interrupted before we read it
        if (code !== 'ENODEV') this.onError?.(err); // ENODEV: unmounted, the connection is gone
        return;
      }
      // Copied: the buffer is reused for the next request while this one may wait for a fetch.
      this.dispatch(Buffer.from(buffer.subarray(0, n)));
    }
  }

  private dispatch(message: Buffer): void {
    let request: P.Request;
    try {
      request = P.parseRequest(message);
    } catch (err) {
      this.onError?.(err);
      return; // no unique to answer; the kernel only sends whole requests, so this is not reached in practice
    }
    const { opcode } = request.header;
    this.handle(request).then(() => this.answered.set(opcode, (this.answered.get(opcode) ?? 0) + 1)).catch((err: unknown) => {
      this.onError?.(err);
      this.reply(request.header.unique, err instanceof HostmeError && err.code === 'fuse-protocol' ? P.ERRNO.EINVAL : P.ERRNO.EIO);
    });
  }

  private async handle({ header, body }: P.Request): Promise<void> {
    const { opcode, unique, nodeid } = header;
    if (opcode === P.OP.INIT) return this.init(unique, body);
    if (!this.initDone) throw P.protocolError(`opcode ${opcode} before INIT`);
    switch (opcode) {
      case P.OP.FORGET:
        P.checkForget(body);
        return; // no reply: nothing is ever forgotten (two inodes, both permanent)
      case P.OP.BATCH_FORGET:
      case P.OP.INTERRUPT:
        return; // no reply; an interrupted READ is still answered when its data arrives
      case P.OP.LOOKUP: {
        const name = P.parseName(body);
        if (nodeid !== P.FUSE_ROOT_ID || name !== this.fileName) return this.reply(unique, P.ERRNO.ENOENT);
        return this.reply(unique, 0, P.encodeEntryOut(this.fileAttr(), ATTR_VALID_SEC));
      }
      case P.OP.GETATTR: {
        P.checkGetattr(body);
        const attr = nodeid === P.FUSE_ROOT_ID ? this.rootAttr() : nodeid === FILE_ID ? this.fileAttr() : undefined;
        if (!attr) return this.reply(unique, P.ERRNO.ENOENT);
        return this.reply(unique, 0, P.encodeAttrOut(attr, ATTR_VALID_SEC));
      }
      case P.OP.OPEN: {
        const { flags } = P.parseOpen(body);
        if (nodeid === P.FUSE_ROOT_ID) return this.reply(unique, P.ERRNO.EISDIR);
        if (nodeid !== FILE_ID) return this.reply(unique, P.ERRNO.ENOENT);
        // O_RDWR is allowed (QEMU opens its mem-path read-write even for a private mapping); WRITE is refused.
        if (flags & (constants.O_TRUNC | constants.O_APPEND)) return this.reply(unique, P.ERRNO.EROFS);
        // NOFLUSH: close() must not wait for this process. A spawn closes the parent's descriptors in the
        // child before exec while the parent waits for that exec: a FLUSH would deadlock the two.
        return this.reply(unique, 0, P.encodeOpenOut(1n, P.FOPEN_KEEP_CACHE | P.FOPEN_NOFLUSH));
      }
      case P.OP.READ:
        return this.read(unique, nodeid, body);
      case P.OP.FLUSH:
      case P.OP.RELEASE:
        return this.reply(unique, 0);
      case P.OP.STATFS:
        return this.reply(unique, 0, P.encodeStatfsOut(BigInt(this.source.size)));
      case P.OP.DESTROY:
        return this.reply(unique, 0);
      default:
        return this.reply(unique, P.ERRNO.ENOSYS);
    }
  }

  private init(unique: bigint, body: Buffer): void {
    const kernel = P.parseInit(body);
    if (kernel.major > P.FUSE_KERNEL_VERSION) {
      // The kernel retries with our major version.
      return this.reply(unique, 0, P.initOutFor(0, P.encodeInitOut({ minor: P.FUSE_MINOR, maxReadahead: 0, flags: 0, maxWrite: MAX_WRITE, maxPages: 0, maxBackground: 0 })));
    }
    if (kernel.major < P.FUSE_KERNEL_VERSION || kernel.minor < 12) {
      this.reply(unique, P.ERRNO.EPROTO);
      throw P.protocolError(`kernel FUSE ${kernel.major}.${kernel.minor} is too old`);
    }
    const minor = Math.min(kernel.minor, P.FUSE_MINOR);
    const maxPages = minor >= 28 && kernel.flags & P.FUSE_MAX_PAGES ? MAX_PAGES : 32;
    this.maxRead = maxPages * 4096;
    const flags = (P.FUSE_ASYNC_READ | (minor >= 28 ? P.FUSE_MAX_PAGES : 0)) & kernel.flags;
    const reply = P.encodeInitOut({ minor, maxReadahead: Math.min(kernel.maxReadahead, this.maxRead), flags, maxWrite: MAX_WRITE, maxPages, maxBackground: 32 });
    this.initDone = true;
    this.reply(unique, 0, P.initOutFor(minor, reply));
    this.resolveInit(minor);
  }

  private async read(unique: bigint, nodeid: bigint, body: Buffer): Promise<void> {
    const { offset, size } = P.parseRead(body);
    if (nodeid !== FILE_ID) return this.reply(unique, nodeid === P.FUSE_ROOT_ID ? P.ERRNO.EISDIR : P.ERRNO.EBADF);
    if (size > this.maxRead) throw P.protocolError(`READ of ${size} bytes, more than the ${this.maxRead} agreed`);
    const fileSize = BigInt(this.source.size);
    if (offset >= fileSize || size === 0) return this.reply(unique, 0);
    const length = Number(fileSize - offset < BigInt(size) ? fileSize - offset : BigInt(size));
    const data = await this.source.read(Number(offset), length);
    this.reply(unique, 0, data);
  }

  private rootAttr(): P.Attr {
    return { ino: P.FUSE_ROOT_ID, size: 0n, mode: 0o040755, nlink: 2, uid: 0, gid: 0, mtimeSec: 0n };
  }

  private fileAttr(): P.Attr {
    return { ino: FILE_ID, size: BigInt(this.source.size), mode: 0o100600, nlink: 1, uid: this.owner.uid, gid: this.owner.gid, mtimeSec: 0n };
  }

  private reply(unique: bigint, error: number, body?: Buffer): void {
    const header = P.replyHeader(unique, error, body?.length ?? 0);
    try {
      // One write per reply: the kernel takes a reply whole or not at all, and /dev/fuse writes never block.
      writeSync(this.fd, body ? Buffer.concat([header, body]) : header);
    } catch (err) {
      // ENOENT: the request was interrupted and is gone; ENODEV: unmounted.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENODEV') this.onError?.(err);
    }
  }
}
