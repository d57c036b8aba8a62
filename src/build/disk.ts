/**
 * Root tree → disk image, reproducibly and without root or loop devices:
 * ext4 with `mke2fs -d` (fixed UUID and hash seed, E2FSPROGS_FAKE_TIME, all
 * inode times pinned with debugfs: `mke2fs -d` copies the host's ctime),
 * optionally inside an MBR-partitioned, BIOS-bootable disk (syslinux on a FAT
 * boot partition written with mtools, ext4 root at partition 2 via
 * `mke2fs -E offset=`).
 */
import { createHash } from 'node:crypto';
import { copyFile, lstat, lutimes, mkdir, open, readdir, readFile, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { HostmeError, errorMessage, isHostmeError } from '../errors.js';
import { runTool, toolOutput } from '../process/tool.js';
import type { Ownership } from './safe-unpack.js';

export const BUILD_EPOCH = 1700000000;
const BLOCK = 4096;
const MiB = 1024 * 1024;
const isRoot = process.getuid?.() === 0;

/** A UUID derived from a seed string (stable per name+version). */
export function derivedUuid(seed: string): string {
  const h = createHash('sha256').update(seed).digest();
  h[6] = (h[6]! & 0x0f) | 0x40;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

export interface TreeStats {
  inodes: number;
  dataBlocks: number;
  /** Image paths ("/", "/bin", ...), sorted bytewise. */
  paths: string[];
}

/** Walks the tree (no symlink following), counting what ext4 will need, and pins every mtime/atime to BUILD_EPOCH. */
export async function scanTree(root: string): Promise<TreeStats> {
  const stats: TreeStats = { inodes: 0, dataBlocks: 0, paths: [] };
  const walk = async (rel: string) => {
    const host = path.join(root, rel);
    const info = await lstat(host);
    stats.inodes++;
    stats.paths.push(rel === '' ? '/' : '/' + rel);
    if (info.isDirectory()) {
      const names = (await readdir(host)).sort();
      const entryBytes = names.reduce((n, name) => n + 8 + ((Buffer.byteLength(name) + 3) & ~3), 24);
      stats.dataBlocks += Math.ceil(entryBytes / BLOCK);
      for (const name of names) await walk(rel ? `${rel}/${name}` : name);
      await utimes(host, BUILD_EPOCH, BUILD_EPOCH);
    } else if (info.isSymbolicLink()) {
      if (info.size >= 60) stats.dataBlocks += 1; // longer targets do not fit in the inode
      await lutimes(host, BUILD_EPOCH, BUILD_EPOCH);
    } else {
      stats.dataBlocks += Math.ceil(info.size / BLOCK) + Math.ceil(info.size / (BLOCK * 340 * 128)); // + extent blocks for very large files
      await utimes(host, BUILD_EPOCH, BUILD_EPOCH);
    }
  };
  await walk('');
  stats.paths.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  return stats;
}

/** mke2fs's default journal size (blocks) for a file system of `blocks` 4 KiB blocks. */
function journalBlocks(blocks: number): number {
  if (blocks < 2048) return 0;
  if (blocks < 32768) return 1024;
  if (blocks < 256 * 1024) return 4096;
  if (blocks < 512 * 1024) return 8192;
  if (blocks < 4096 * 1024) return 16384;
  return 32768;
}

/** Usable blocks of an ext4 of `bytes` with mke2fs defaults (inode ratio 4096 below 512 MiB, else 16384). */
function capacity(bytes: number): { blocks: number; inodes: number } {
  const blocks = Math.floor(bytes / BLOCK);
  const inodes = Math.floor(bytes / (bytes < 512 * MiB ? 4096 : 16384));
  const groups = Math.ceil(blocks / 32768);
  const overhead = Math.ceil((inodes * 256) / BLOCK) + journalBlocks(blocks) + groups * 2 + Math.ceil(blocks / 1024) + 64;
  return { blocks: blocks - overhead, inodes };
}

/** The smallest ext4 size (bytes, whole MiB) that holds `tree` with a little room to spare. */
export function neededFsBytes(tree: TreeStats): number {
  const wantBlocks = Math.ceil(tree.dataBlocks * 1.02) + 16;
  for (let mib = 4; ; mib += mib < 256 ? 1 : Math.ceil(mib / 64)) {
    const c = capacity(mib * MiB);
    if (c.blocks >= wantBlocks && c.inodes >= tree.inodes + 16) return mib * MiB;
  }
}

/** Size to use when the manifest says "auto": the need plus 25% (at least 8 MiB) of free space, rounded to 4 MiB. */
export function autoFsBytes(tree: TreeStats): number {
  const need = neededFsBytes(tree);
  const withRoom = need + Math.max(8 * MiB, Math.ceil(need / 4));
  return Math.ceil(withRoom / (4 * MiB)) * 4 * MiB;
}

function tooSmall(what: string, have: number, need: number): HostmeError {
  const mib = Math.ceil(need / MiB);
  return new HostmeError('disk-too-small', `${what} of ${(have / MiB).toFixed(1)} MiB is too small for the image: it needs at least ${mib} MiB (set hardware.diskSize to "${mib}M" or more, or "auto")`, { sizeBytes: have, neededBytes: mib * MiB });
}

export interface Ext4Request {
  root: string;
  /** Image file; must already exist with its final size when offset > 0. */
  image: string;
  offset?: number;
  sizeBytes: number;
  uuid: string;
  hashSeed: string;
  label: string;
  tree: TreeStats;
  /** Ownership to set with debugfs (paths in the image); when not root, everything else becomes 0:0. */
  owners: Map<string, Ownership>;
}

function device(image: string, offset: number): string {
  return offset ? `${image}?offset=${offset}` : image;
}

export async function makeExt4(req: Ext4Request): Promise<void> {
  const offset = req.offset ?? 0;
  const need = neededFsBytes(req.tree);
  if (req.sizeBytes < need) throw tooSmall('the root file system', req.sizeBytes, need);
  const env = { ...process.env, LC_ALL: 'C', E2FSPROGS_FAKE_TIME: String(BUILD_EPOCH) };
  const ext = [`hash_seed=${req.hashSeed}`, 'root_owner=0:0', ...(offset ? [`offset=${offset}`] : [])];
  const args = ['-q', '-F', '-t', 'ext4', '-b', String(BLOCK), '-m', '0', '-L', req.label, '-U', req.uuid, '-E', ext.join(','), '-d', req.root, req.image, `${Math.floor(req.sizeBytes / 1024)}k`];
  try {
    await runTool('mke2fs', args, { env });
  } catch (err) {
    if (isHostmeError(err, 'tool-missing')) throw err;
    const text = toolOutput(err);
    if (/no space|could not allocate|not enough space|too many/i.test(text)) throw tooSmall('the root file system', req.sizeBytes, Math.max(need, req.sizeBytes * 1.5));
    throw new HostmeError('mkfs-failed', `mke2fs failed: ${text.trim().split('\n').slice(-2).join(' ') || errorMessage(err)}`);
  }
  // Pin every inode's times (mke2fs -d copies ctime, which userland cannot set) and set owners.
  const lines: string[] = [];
  for (const p of req.tree.paths) {
    // debugfs commands quote paths with "..." and have no escape for '"' or newlines.
    if (/["\n\r]/.test(p)) throw new HostmeError('unsupported-file-name', `cannot build a file name containing a double quote or a newline: ${JSON.stringify(p)}`, { path: p });
    for (const field of ['atime', 'mtime', 'ctime', 'crtime']) lines.push(`sif "${p}" ${field} @${BUILD_EPOCH}`);
    const owner = req.owners.get(p) ?? (isRoot ? undefined : { uid: 0, gid: 0 });
    if (owner) lines.push(`sif "${p}" uid ${owner.uid}`, `sif "${p}" gid ${owner.gid}`);
    if (owner?.mode !== undefined) {
      const type = (await lstat(path.join(req.root, p))).mode & 0o170000;
      lines.push(`sif "${p}" mode 0${(type | owner.mode).toString(8)}`);
    }
  }
  const cmds = `${req.image}.debugfs-commands`;
  await writeFile(cmds, lines.join('\n') + '\n');
  try {
    const { stderr } = await runTool('debugfs', ['-w', '-f', cmds, device(req.image, offset)], { env, maxOutputBytes: 256 << 20 });
    // debugfs exits 0 even when a command fails: any message besides its banner is an error.
    const problems = stderr.split('\n').filter((l) => l.trim() && !/^debugfs \d/.test(l));
    if (problems.length) throw new HostmeError('mkfs-failed', `debugfs could not pin inode times/owners: ${problems[0]}`, { problems: problems.slice(0, 20) });
  } finally {
    await rm(cmds, { force: true });
  }
}

const SYSLINUX_MBR = ['/usr/lib/syslinux/mbr/mbr.bin', '/usr/lib/SYSLINUX/mbr.bin'];

async function firstExisting(paths: string[], what: string, pkg: string): Promise<string> {
  for (const p of paths) if (await stat(p).then(() => true, () => false)) return p;
  throw new HostmeError('tool-missing', `${what} not found (${paths.join(', ')}): install the Debian package ${pkg}`, { package: pkg });
}

/** A disk tool run to completion; its Debian package comes from the process layer's table. */
async function tool(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, input?: string): Promise<void> {
  await runTool(cmd, args, { env, input, failureCode: 'disk-tool-failed' });
}

export interface BiosDiskRequest {
  image: string;
  diskBytes: number;
  root: string;
  tree: TreeStats;
  owners: Map<string, Ownership>;
  uuid: string;
  hashSeed: string;
  label: string;
  kernel: string;
  initrd?: string;
  cmdline: string;
}

/**
 * MBR disk: partition 1 FAT16 (bootable) with syslinux, the kernel, initrd
 * and syslinux.cfg; partition 2 the ext4 root (/dev/nvme0n1p2, /dev/sda2...).
 */
export async function makeBiosDisk(req: BiosDiskRequest): Promise<void> {
  const kernelBytes = (await stat(req.kernel)).size + (req.initrd ? (await stat(req.initrd)).size : 0);
  const bootBytes = Math.max(16 * MiB, Math.ceil((kernelBytes * 1.1 + 2 * MiB) / MiB) * MiB);
  const bootStart = MiB;
  const rootStart = bootStart + bootBytes;
  const rootBytes = Math.floor((req.diskBytes - rootStart) / MiB) * MiB;
  const need = rootStart + neededFsBytes(req.tree);
  if (rootBytes <= 0 || rootStart + rootBytes < need) throw tooSmall('the disk', req.diskBytes, need);
  await rm(req.image, { force: true });
  await writeFile(req.image, '');
  await truncate(req.image, req.diskBytes);
  const labelId = req.uuid.replace(/-/g, '').slice(0, 8);
  const script = `label: dos\nlabel-id: 0x${labelId}\nunit: sectors\nstart=${bootStart / 512}, size=${bootBytes / 512}, type=e, bootable\nstart=${rootStart / 512}, size=${rootBytes / 512}, type=83\n`;
  await tool('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', req.image], process.env, script);
  await writeSyslinuxPartition({ image: req.image, start: bootStart, bytes: bootBytes, volumeId: labelId, kernel: req.kernel, initrd: req.initrd, cmdline: req.cmdline });
  await writeSyslinuxMbr(req.image);
  await makeExt4({ root: req.root, image: req.image, offset: rootStart, sizeBytes: rootBytes, uuid: req.uuid, hashSeed: req.hashSeed, label: req.label, tree: req.tree, owners: req.owners });
}

export interface SyslinuxPartition {
  image: string;
  /** Byte offset and size of the partition (whole sectors; the MBR entry is written by the caller). */
  start: number;
  bytes: number;
  /** FAT volume id: 8 hex digits. */
  volumeId: string;
  /** A bzImage (syslinux speaks the Linux boot protocol; an ELF vmlinux does not boot this way). */
  kernel: string;
  initrd?: string;
  cmdline: string;
}

/**
 * Formats the partition at `start` as FAT16 (mkfs.vfat --offset) holding
 * syslinux.cfg, /vmlinuz and /initrd, and installs syslinux's boot sector and
 * ldlinux.sys there (syslinux --offset): no root, no loop device.
 */
export async function writeSyslinuxPartition(req: SyslinuxPartition): Promise<void> {
  const env = { ...process.env, TZ: 'UTC', SOURCE_DATE_EPOCH: String(BUILD_EPOCH), MTOOLS_SKIP_CHECK: '1' };
  await tool('mkfs.vfat', ['-F', '16', '--offset', String(req.start / 512), '-i', req.volumeId, '-n', 'HOSTMEBOOT', '--invariant', req.image, String(req.bytes / 1024)], env);
  const fat = `${req.image}@@${req.start}`;
  const staging = `${req.image}.boot`;
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging);
  try {
    const cfg = ['DEFAULT linux', 'PROMPT 0', 'TIMEOUT 0', 'LABEL linux', '  KERNEL /vmlinuz', ...(req.initrd ? ['  INITRD /initrd'] : []), `  APPEND ${req.cmdline}`, ''].join('\n');
    await writeFile(path.join(staging, 'syslinux.cfg'), cfg);
    await copyFile(req.kernel, path.join(staging, 'vmlinuz'));
    if (req.initrd) await copyFile(req.initrd, path.join(staging, 'initrd'));
    const names = ['syslinux.cfg', 'vmlinuz', ...(req.initrd ? ['initrd'] : [])];
    for (const n of names) await utimes(path.join(staging, n), BUILD_EPOCH, BUILD_EPOCH);
    await tool('mcopy', ['-m', '-i', fat, ...names.map((n) => path.join(staging, n)), '::/'], env);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  await tool('syslinux', ['--offset', String(req.start), '--install', req.image], env);
}

/** Writes syslinux's MBR boot code (the first 440 bytes: it chain-loads the active partition); the partition table is left as it is. */
export async function writeSyslinuxMbr(image: string): Promise<void> {
  const mbr = await firstExisting(SYSLINUX_MBR, 'syslinux mbr.bin', 'syslinux-common');
  const mbrBytes = (await readFile(mbr)).subarray(0, 440);
  const handle = await open(image, 'r+');
  try {
    await handle.write(mbrBytes, 0, mbrBytes.length, 0);
  } finally {
    await handle.close();
  }
}

/** Bytes the BIOS layout adds in front of the root file system for a kernel(+initrd) of `kernelBytes`. */
export function biosOverheadBytes(kernelBytes: number): number {
  return MiB + Math.max(16 * MiB, Math.ceil((kernelBytes * 1.1 + 2 * MiB) / MiB) * MiB);
}
