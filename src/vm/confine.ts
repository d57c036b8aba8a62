/**
 * QEMU confined (issue #13): always under a seccomp sandbox, and when hostme
 * runs as root, QEMU runs as an unprivileged user from its first instruction
 * (the uid/gid are set before exec, not with -runas: the sandbox's
 * elevateprivileges=deny forbids QEMU's own setuid). QEMU then opens no host
 * path it was not handed: files come as open descriptors (disks through
 * /dev/fdset, the kernel and initrd through /proc/self/fd, which skips the
 * parent folders' permissions), NBD sockets are handed to its user, and the
 * sockets QEMU creates live in a run folder it owns. Memory snapshots too:
 * the device state moves through a descriptor or a socket (never `exec:`,
 * a spawn the sandbox forbids), and the RAM file is handed over (below).
 */
import { constants, openSync, closeSync, open as openCb } from 'node:fs';
import { promisify } from 'node:util';
import fs from 'node:fs/promises';
import path from 'node:path';
import { HostmeError, errorMessage } from '../errors.js';
import { runTool } from '../process/tool.js';
import type { VmSpec } from './qemu.js';

export const SANDBOX_ARGS = ['-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny'] as const;

export interface QemuUser { name: string; uid: number; gid: number }

/** The user QEMU runs as: undefined when hostme is not root, or when HOSTME_QEMU_USER=root. Default nobody. */
export async function qemuUser(): Promise<QemuUser | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const name = process.env.HOSTME_QEMU_USER || 'nobody';
  if (name === 'root') return undefined;
  try {
    const ids = (await idsFromPasswd(name)) ?? (await idsFromTool(name));
    if (!Number.isInteger(ids.uid) || !Number.isInteger(ids.gid) || ids.uid === 0) throw new HostmeError('qemu-user', `${name} has uid 0`);
    return { name, ...ids };
  } catch (err) {
    throw new HostmeError('qemu-user', `cannot run QEMU as ${name}: ${errorMessage(err)} (set HOSTME_QEMU_USER to an unprivileged user)`, { user: name });
  }
}

/** uid and primary gid from /etc/passwd: no process per run (two `id` spawns cost a resume ~0.1-0.3 s). */
async function idsFromPasswd(name: string): Promise<{ uid: number; gid: number } | undefined> {
  const passwd = await fs.readFile('/etc/passwd', 'utf8').catch(() => '');
  for (const line of passwd.split('\n')) {
    const [user, , uid, gid] = line.split(':');
    if (user === name && uid !== undefined && gid !== undefined && /^\d+$/.test(uid) && /^\d+$/.test(gid)) return { uid: Number(uid), gid: Number(gid) };
  }
  return undefined;
}

/** Users from other name services (LDAP, systemd's DynamicUser): ask `id`. */
async function idsFromTool(name: string): Promise<{ uid: number; gid: number }> {
  const uid = Number((await runTool('id', ['-u', name], { timeoutMs: 10_000 })).stdout.trim());
  const gid = Number((await runTool('id', ['-g', name], { timeoutMs: 10_000 })).stdout.trim());
  return { uid, gid };
}

export interface HandedOver {
  spec: VmSpec;
  /** Descriptors for the child, in order from fd 3. */
  fds: number[];
  close(): void;
}

/**
 * Rewrites a spec so a QEMU running as `user` reaches exactly what the spec
 * names. `runDir` (the QMP socket's folder) becomes the user's.
 */
export async function handOver(spec: VmSpec, runDir: string, user: QemuUser): Promise<HandedOver> {
  const fds: number[] = [];
  const close = () => fds.forEach((fd) => closeSync(fd));
  try {
    const pass = (file: string, flags: number) => {
      // libuv opens with O_CLOEXEC: only the child gets these, as fd 3 onwards.
      fds.push(openSync(file, flags));
      return 2 + fds.length; // fd 3 is the first extra stdio entry
    };
    await fs.chown(runDir, user.uid, user.gid);
    const extraArgs: string[] = [];
    const disks = spec.disks.map((disk, i) => {
      if (disk.file === undefined) return disk;
      const fd = pass(disk.file, disk.readOnly ? constants.O_RDONLY : constants.O_RDWR);
      // opaque names the file in argv and query-fdsets (QEMU option syntax doubles commas).
      extraArgs.push('-add-fd', `fd=${fd},set=${i + 1},opaque=${disk.file.replaceAll(',', ',,')}`);
      return { ...disk, file: `/dev/fdset/${i + 1}` };
    });
    for (const socket of new Set(spec.disks.flatMap((d) => (d.nbdSocket ? [d.nbdSocket] : [])))) {
      await fs.chown(socket, user.uid, user.gid);
      const parent = path.dirname(socket);
      const mode = (await fs.stat(parent)).mode;
      if ((mode & 0o001) === 0) await fs.chmod(parent, (mode & 0o7777) | 0o001); // traverse only, no listing
    }
    // QEMU reopens the kernel and initrd by name: /proc/self/fd skips the folders' permissions but not the file's.
    const bootFile = async (file: string | undefined, name: string) => {
      if (file === undefined) return undefined;
      let readable = file;
      if (((await fs.stat(file)).mode & 0o004) === 0) {
        readable = path.join(runDir, name);
        await fs.copyFile(file, readable);
        await fs.chmod(readable, 0o644);
      }
      return `/proc/self/fd/${pass(readable, constants.O_RDONLY)}`;
    };
    let memoryFile = spec.memoryFile;
    if (memoryFile) {
      // QEMU 7.2 opens mem-path read-write even for share=off, and reopening /proc/self/fd/N
      // checks the file's own permissions: the file must be its user's.
      let file = memoryFile.path;
      if (memoryFile.perInstance) {
        // A FUSE file this process serves: a synchronous open would wait for a reply this (blocked) thread must write.
        const fd = await promisify(openCb)(file, constants.O_RDWR);
        fds.push(fd);
        memoryFile = { ...memoryFile, path: `/proc/self/fd/${2 + fds.length}` };
      } else if (memoryFile.shared) {
        // A saving VM writes its RAM into this (hostme's temporary) file.
        closeSync(openSync(file, constants.O_RDWR | constants.O_CREAT, 0o600));
      } else {
        // Never the cache's RAM file, which every instance maps: a private copy (holes stay holes).
        file = path.join(runDir, 'ram.bin');
        await copySparse(memoryFile.path, file);
      }
      if (!memoryFile.perInstance) {
        await fs.chown(file, user.uid, user.gid);
        memoryFile = { ...memoryFile, path: `/proc/self/fd/${pass(file, constants.O_RDWR)}` };
      }
    }
    const kernel = await bootFile(spec.kernel, 'kernel');
    const initrd = await bootFile(spec.initrd, 'initrd');
    let overlay = spec.overlay;
    if (overlay) {
      // QEMU listens in its own folder; the caller's path points there.
      const inside = path.join(runDir, 'ov0.sock');
      await fs.rm(overlay.socket, { force: true });
      await fs.symlink(inside, overlay.socket);
      overlay = { ...overlay, socket: inside };
    }
    return { spec: { ...spec, disks, kernel, initrd, overlay, memoryFile, extraArgs: [...extraArgs, ...(spec.extraArgs ?? [])] }, fds, close };
  } catch (err) {
    close();
    if (err instanceof HostmeError) throw err;
    throw new HostmeError('qemu-failed', `cannot hand the VM's files to QEMU's user ${user.name}: ${errorMessage(err)}`, { user: user.name }, { cause: err });
  }
}

const COPY_BLOCK = 1 << 20;

/** Copies `from` to a new file `to`, leaving all-zero 1 MiB blocks as holes (RAM is mostly zeros). */
async function copySparse(from: string, to: string): Promise<void> {
  const source = await fs.open(from, 'r');
  const target = await fs.open(to, 'w', 0o600);
  try {
    const size = (await source.stat()).size;
    const block = Buffer.alloc(COPY_BLOCK);
    const zero = Buffer.alloc(COPY_BLOCK);
    for (let offset = 0; offset < size; offset += COPY_BLOCK) {
      const { bytesRead } = await source.read(block, 0, Math.min(COPY_BLOCK, size - offset), offset);
      const data = block.subarray(0, bytesRead);
      if (!data.equals(zero.subarray(0, bytesRead))) await target.write(data, 0, bytesRead, offset);
    }
    await target.truncate(size);
  } finally {
    await source.close();
    await target.close();
  }
}
