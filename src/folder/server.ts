/**
 * The folder caretaker: a 9P2000.L file server for host folders granted to
 * an environment. The guest reaches it at GATEWAY:564 (the switch splices
 * that TCP port to this server's unix socket, src/net/gateway-tcp.ts) and
 * mounts it with `mount -t 9p -o trans=tcp,port=564,aname=NAME GATEWAY /mnt`.
 *
 * What it enforces, whatever the guest sends:
 * - read-only exports refuse every change (open for write, create, mkdir,
 *   unlink, rename, setattr, write) with EACCES;
 * - confinement: a fid is a list of names under the export's root, each name
 *   one component (no "/", NUL, "." or ".."; ".." is refused, not followed);
 *   a walk never passes through a symbolic link (ELOOP), the last component
 *   is opened with O_NOFOLLOW, and before each use the fid's parent folder
 *   must resolve (realpath) to exactly its lexical path, so a symlink
 *   swapped in on the host is refused too; the guest cannot create symlinks
 *   or hard links;
 * - revocation: a revoked export's fids fail with EACCES at their next use
 *   (open files are closed at once), and it cannot be attached again;
 * - bounds: msize at most 64 KiB (a larger message closes the connection),
 *   256 fids and 16 walk names per message, 16 connections.
 */
import { constants, type Stats } from 'node:fs';
import { lstat, mkdir, open, readdir, readlink, realpath, rename, rm, rmdir, statfs, truncate, unlink, utimes, chmod, type FileHandle } from 'node:fs/promises';
import net from 'node:net';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { HostmeError } from '../errors.js';
import { HEADER, NOFID, QT_DIR, QT_FILE, QT_SYMLINK, Reader, ShortMessage, T, Writer, type Qid } from './wire.js';

export const FOLDER_PORT = 564;
export const MAX_MSIZE = 64 * 1024;
const MAX_FIDS = 256;
const MAX_WALK = 16;
const MAX_SESSIONS = 16;
const VERSION = '9P2000.L';

const E = { EPERM: 1, ENOENT: 2, EIO: 5, EBADF: 9, EACCES: 13, EEXIST: 17, ENOTDIR: 20, EISDIR: 21, EINVAL: 22, EMFILE: 24, ENAMETOOLONG: 36, ENOTEMPTY: 39, ELOOP: 40, EPROTO: 71, EOPNOTSUPP: 95 } as const;

/** Linux open flags (9P2000.L carries the guest's). */
const L_ACCMODE = 3;
const L_O_TRUNC = 0o1000;
const AT_REMOVEDIR = 0x200;

export interface FolderExport { name: string; path: string; mode: 'ro' | 'rw' }
interface LiveExport extends FolderExport { revoked: boolean }

class NineError extends Error {
  constructor(readonly errno: number) {
    super(`9p errno ${errno}`);
  }
}

function errnoOf(err: unknown): number {
  if (err instanceof NineError) return err.errno;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return (code && (osConstants.errno as Record<string, number>)[code]) || E.EIO;
}

interface Fid {
  exp: LiveExport;
  names: string[];
  file?: FileHandle;
  /** Directory listing taken at the first Treaddir. */
  listing?: Array<{ name: string; qid: Qid; type: number }>;
}

/** The host folders granted to one environment, served over 9P2000.L. */
export class FolderServer {
  private readonly exports = new Map<string, LiveExport>();
  private readonly sessions = new Set<Session>();
  private readonly server: net.Server;

  private constructor(readonly socketPath: string) {
    this.server = net.createServer((socket) => {
      if (this.sessions.size >= MAX_SESSIONS) return void socket.destroy();
      const session = new Session(this, socket);
      this.sessions.add(session);
      socket.once('close', () => {
        this.sessions.delete(session);
        void session.closeAll();
      });
    });
  }

  static async listen(socketPath: string, exports: FolderExport[]): Promise<FolderServer> {
    const server = new FolderServer(socketPath);
    for (const exp of exports) await server.grant(exp);
    await rm(socketPath, { force: true });
    await new Promise<void>((resolve, reject) => {
      server.server.once('error', reject);
      server.server.listen(socketPath, () => resolve());
    });
    return server;
  }

  /** The export name of a folder: its base name (what the guest passes as aname). */
  static exportName(folder: string): string {
    return path.basename(folder) || 'root';
  }

  /** Open client connections (hostme caretaker status). */
  get connections(): number {
    return this.sessions.size;
  }

  get granted(): FolderExport[] {
    return [...this.exports.values()].map(({ name, path: p, mode }) => ({ name, path: p, mode }));
  }

  /** Grants (or re-grants with another mode) a folder; its root is resolved once, here. */
  async grant(exp: FolderExport): Promise<void> {
    const root = await realpath(exp.path).catch(() => undefined);
    const st = root ? await lstat(root) : undefined;
    if (!root || !st?.isDirectory()) throw new HostmeError('usage', `folder ${exp.path}: not a directory`);
    this.revoke(exp.name);
    this.exports.set(exp.name, { name: exp.name, path: root, mode: exp.mode, revoked: false });
  }

  /** Revokes one export (by name or path), or all; open files are closed now. */
  revoke(nameOrPath?: string): void {
    for (const [name, exp] of this.exports) {
      if (nameOrPath !== undefined && name !== nameOrPath && exp.path !== nameOrPath && path.resolve(nameOrPath) !== exp.path) continue;
      exp.revoked = true;
      this.exports.delete(name);
    }
    for (const session of this.sessions) session.dropRevoked();
  }

  find(aname: string): LiveExport | undefined {
    if (aname === '' && this.exports.size === 1) return [...this.exports.values()][0];
    return this.exports.get(aname);
  }

  async close(): Promise<void> {
    for (const session of this.sessions) session.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await rm(this.socketPath, { force: true });
  }
}

function qidOf(st: Stats): Qid {
  const type = st.isDirectory() ? QT_DIR : st.isSymbolicLink() ? QT_SYMLINK : QT_FILE;
  return { type, version: 0, path: BigInt(st.ino) };
}

function checkName(name: string): void {
  if (name.length === 0 || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) throw new NineError(E.EINVAL);
  if (Buffer.byteLength(name) > 255) throw new NineError(E.ENAMETOOLONG);
}

class Session {
  private msize = MAX_MSIZE;
  private buffer = Buffer.alloc(0);
  private busy = false;
  private readonly fids = new Map<number, Fid>();

  constructor(
    private readonly owner: FolderServer,
    private readonly socket: net.Socket,
  ) {
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      if (this.buffer.length > 2 * MAX_MSIZE) socket.pause();
      void this.drain();
    });
  }

  destroy(): void {
    this.socket.destroy();
  }

  async closeAll(): Promise<void> {
    for (const fid of this.fids.values()) await fid.file?.close().catch(() => {});
    this.fids.clear();
  }

  dropRevoked(): void {
    for (const fid of this.fids.values()) {
      if (fid.exp.revoked && fid.file) {
        void fid.file.close().catch(() => {});
        fid.file = undefined;
      }
    }
  }

  private async drain(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.buffer.length >= 4 && !this.socket.destroyed) {
        const size = this.buffer.readUInt32LE(0);
        if (size < HEADER || size > this.msize) return void this.socket.destroy();
        if (this.buffer.length < size) break;
        const message = this.buffer.subarray(0, size);
        this.buffer = this.buffer.subarray(size);
        const reply = await this.handle(message);
        if (!this.socket.destroyed) this.socket.write(reply);
      }
      if (this.buffer.length <= 2 * MAX_MSIZE) this.socket.resume();
    } finally {
      this.busy = false;
    }
  }

  private async handle(message: Buffer): Promise<Buffer> {
    const type = message.readUInt8(4);
    const tag = message.readUInt16LE(5);
    const r = new Reader(message.subarray(HEADER));
    try {
      const body = await this.dispatch(type, r);
      return body.message(type + 1, tag);
    } catch (err) {
      const errno = err instanceof ShortMessage ? E.EPROTO : errnoOf(err);
      return new Writer().u32(errno).message(T.Rlerror, tag);
    }
  }

  private fid(n: number): Fid {
    const fid = this.fids.get(n);
    if (!fid) throw new NineError(E.EBADF);
    if (fid.exp.revoked) throw new NineError(E.EACCES);
    return fid;
  }

  private newFid(n: number, fid: Fid): void {
    if (n === NOFID) throw new NineError(E.EBADF);
    if (!this.fids.has(n) && this.fids.size >= MAX_FIDS) throw new NineError(E.EMFILE);
    this.fids.set(n, fid);
  }

  /** The host path of a fid, after checking no symlink was swapped into its parents. */
  private async hostPath(fid: Fid, extra?: string): Promise<string> {
    const names = extra === undefined ? fid.names : [...fid.names, extra];
    const parentNames = names.slice(0, -1);
    const parent = path.join(fid.exp.path, ...parentNames);
    if ((await realpath(parent)) !== parent) throw new NineError(E.EACCES);
    return path.join(fid.exp.path, ...names);
  }

  private writable(fid: Fid): void {
    if (fid.exp.mode !== 'rw') throw new NineError(E.EACCES);
  }

  private async dispatch(type: number, r: Reader): Promise<Writer> {
    const w = new Writer();
    switch (type) {
      case T.Tversion: {
        const msize = r.u32();
        const version = r.str();
        await this.closeAll();
        if (msize < 512) throw new NineError(E.EINVAL);
        this.msize = Math.min(msize, MAX_MSIZE);
        return w.u32(this.msize).str(version === VERSION ? VERSION : 'unknown');
      }
      case T.Tauth:
        throw new NineError(E.EOPNOTSUPP);
      case T.Tattach: {
        const fidNo = r.u32();
        r.u32(); // afid: no authentication (the control socket decided who is granted)
        r.str(); // uname
        const aname = r.str();
        const exp = this.owner.find(aname);
        if (!exp) throw new NineError(E.EACCES);
        const st = await lstat(exp.path);
        this.newFid(fidNo, { exp, names: [] });
        return w.qid(qidOf(st));
      }
      case T.Tflush:
        r.u16();
        return w;
      case T.Twalk: {
        const from = this.fid(r.u32());
        const newNo = r.u32();
        const count = r.u16();
        if (count > MAX_WALK) throw new NineError(E.EINVAL);
        const names = [...from.names];
        const qids: Qid[] = [];
        for (let i = 0; i < count; i++) {
          const name = r.str();
          try {
            if (name === '..') throw new NineError(E.EACCES);
            checkName(name);
            const here = path.join(from.exp.path, ...names);
            const st = await lstat(path.join(here, name));
            // Never through a symlink; the last name may be one (readlink, getattr).
            if (i < count - 1 && !st.isDirectory()) throw new NineError(st.isSymbolicLink() ? E.ELOOP : E.ENOTDIR);
            names.push(name);
            qids.push(qidOf(st));
          } catch (err) {
            if (i === 0) throw err;
            break; // a partial walk: the qids so far, newfid untouched
          }
        }
        if (qids.length === count) {
          if (newNo !== NOFID && this.fids.has(newNo) && newNo !== NOFID) {
            const old = this.fids.get(newNo)!;
            if (old !== from) await old.file?.close().catch(() => {});
          }
          this.newFid(newNo, { exp: from.exp, names });
        }
        w.u16(qids.length);
        for (const q of qids) w.qid(q);
        return w;
      }
      case T.Tlopen: {
        const fid = this.fid(r.u32());
        const flags = r.u32();
        if (fid.file) throw new NineError(E.EINVAL);
        const write = (flags & L_ACCMODE) !== 0 || (flags & L_O_TRUNC) !== 0;
        if (write) this.writable(fid);
        const p = await this.hostPath(fid);
        const st = await lstat(p);
        if (st.isSymbolicLink()) throw new NineError(E.ELOOP);
        if (st.isDirectory()) {
          if (write) throw new NineError(E.EISDIR);
        } else {
          const access = (flags & L_ACCMODE) === 2 ? constants.O_RDWR : (flags & L_ACCMODE) === 1 ? constants.O_WRONLY : constants.O_RDONLY;
          fid.file = await open(p, access | constants.O_NOFOLLOW | ((flags & L_O_TRUNC) ? constants.O_TRUNC : 0));
        }
        return w.qid(qidOf(st)).u32(this.msize - HEADER - 4);
      }
      case T.Tlcreate: {
        const fid = this.fid(r.u32());
        const name = r.str();
        const flags = r.u32();
        const mode = r.u32();
        r.u32();
        this.writable(fid);
        checkName(name);
        const p = await this.hostPath(fid, name);
        const access = (flags & L_ACCMODE) === 2 ? constants.O_RDWR : (flags & L_ACCMODE) === 1 ? constants.O_WRONLY : constants.O_RDONLY;
        const file = await open(p, access | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode & 0o777);
        fid.names = [...fid.names, name];
        fid.file = file;
        return w.qid(qidOf(await file.stat())).u32(this.msize - HEADER - 4);
      }
      case T.Tread: {
        const fid = this.fid(r.u32());
        const offset = r.u64();
        const count = Math.min(r.u32(), this.msize - HEADER - 4);
        if (!fid.file) throw new NineError(E.EBADF);
        const data = Buffer.alloc(count);
        const { bytesRead } = await fid.file.read(data, 0, count, Number(offset));
        return w.u32(bytesRead).raw(data.subarray(0, bytesRead));
      }
      case T.Twrite: {
        const fid = this.fid(r.u32());
        const offset = r.u64();
        const count = r.u32();
        const data = r.bytes(count);
        this.writable(fid);
        if (!fid.file) throw new NineError(E.EBADF);
        const { bytesWritten } = await fid.file.write(data, 0, data.length, Number(offset));
        return w.u32(bytesWritten);
      }
      case T.Tclunk: {
        const n = r.u32();
        const fid = this.fids.get(n);
        if (!fid) throw new NineError(E.EBADF);
        this.fids.delete(n);
        await fid.file?.close().catch(() => {});
        return w;
      }
      case T.Tremove: {
        const n = r.u32();
        const fid = this.fid(n);
        this.fids.delete(n);
        await fid.file?.close().catch(() => {});
        this.writable(fid);
        if (fid.names.length === 0) throw new NineError(E.EACCES);
        const p = await this.hostPath(fid);
        if ((await lstat(p)).isDirectory()) await rmdir(p);
        else await unlink(p);
        return w;
      }
      case T.Tgetattr: {
        const fid = this.fid(r.u32());
        r.u64();
        const st = await lstat(await this.hostPath(fid));
        const sec = (ms: number) => BigInt(Math.floor(ms / 1000));
        const nsec = (ms: number) => BigInt(Math.floor((ms % 1000) * 1e6));
        w.u64(0x7ff).qid(qidOf(st)).u32(st.mode).u32(st.uid).u32(st.gid).u64(st.nlink).u64(st.rdev).u64(st.size).u64(st.blksize).u64(st.blocks);
        for (const ms of [st.atimeMs, st.mtimeMs, st.ctimeMs, st.birthtimeMs]) w.u64(sec(ms)).u64(nsec(ms));
        return w.u64(0).u64(0);
      }
      case T.Tsetattr: {
        const fid = this.fid(r.u32());
        const valid = r.u32();
        const mode = r.u32();
        r.u32();
        r.u32();
        const size = r.u64();
        const atime = Number(r.u64()) + Number(r.u64()) / 1e9;
        const mtime = Number(r.u64()) + Number(r.u64()) / 1e9;
        this.writable(fid);
        const p = await this.hostPath(fid);
        if ((await lstat(p)).isSymbolicLink()) throw new NineError(E.ELOOP);
        if (valid & 1) await chmod(p, mode & 0o7777);
        if (valid & 8) await truncate(p, Number(size));
        if (valid & (16 | 32)) {
          const now = Date.now() / 1000;
          await utimes(p, valid & 128 ? atime : now, valid & 256 ? mtime : now);
        }
        return w;
      }
      case T.Treaddir: {
        const fid = this.fid(r.u32());
        const offset = Number(r.u64());
        const count = Math.min(r.u32(), this.msize - HEADER - 4);
        const dir = await this.hostPath(fid);
        if (offset === 0 || !fid.listing) {
          const names = (await readdir(dir)).sort();
          fid.listing = [];
          for (const name of names.slice(0, 100_000)) {
            const st = await lstat(path.join(dir, name)).catch(() => undefined);
            if (st) fid.listing.push({ name, qid: qidOf(st), type: st.isDirectory() ? 4 : st.isSymbolicLink() ? 10 : 8 });
          }
        }
        const body = new Writer();
        for (let i = offset; i < fid.listing.length; i++) {
          const e = fid.listing[i]!;
          const entry = new Writer().qid(e.qid).u64(i + 1).u8(e.type).str(e.name);
          if (body.size + entry.size > count) break;
          body.qid(e.qid).u64(i + 1).u8(e.type).str(e.name);
        }
        return w.u32(body.size).raw(body.message(0, 0).subarray(HEADER));
      }
      case T.Tmkdir: {
        const fid = this.fid(r.u32());
        const name = r.str();
        const mode = r.u32();
        r.u32();
        this.writable(fid);
        checkName(name);
        const p = await this.hostPath(fid, name);
        await mkdir(p, { mode: mode & 0o777 });
        return w.qid(qidOf(await lstat(p)));
      }
      case T.Tunlinkat: {
        const fid = this.fid(r.u32());
        const name = r.str();
        const flags = r.u32();
        this.writable(fid);
        checkName(name);
        const p = await this.hostPath(fid, name);
        if (flags & AT_REMOVEDIR) await rmdir(p);
        else await unlink(p);
        return w;
      }
      case T.Trenameat: {
        const from = this.fid(r.u32());
        const oldName = r.str();
        const to = this.fid(r.u32());
        const newName = r.str();
        this.writable(from);
        if (to.exp !== from.exp) throw new NineError(E.EACCES);
        checkName(oldName);
        checkName(newName);
        await rename(await this.hostPath(from, oldName), await this.hostPath(to, newName));
        return w;
      }
      case T.Treadlink: {
        const fid = this.fid(r.u32());
        // The target is text for the guest to resolve in its own namespace; the server never follows it.
        return w.str(await readlink(await this.hostPath(fid)));
      }
      case T.Tstatfs: {
        const fid = this.fid(r.u32());
        const s = await statfs(await this.hostPath(fid));
        return w.u32(0x01021997).u32(s.bsize).u64(s.blocks).u64(s.bfree).u64(s.bavail).u64(s.files).u64(s.ffree).u64(0).u32(255);
      }
      case T.Tfsync: {
        const fid = this.fid(r.u32());
        await fid.file?.sync().catch(() => {});
        return w;
      }
      default:
        // Symlinks, hard links, device nodes, xattrs, locks: not offered.
        throw new NineError(E.EOPNOTSUPP);
    }
  }
}
