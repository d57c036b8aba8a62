/**
 * The snapshot RAM as a lazily fetched file on a per-run FUSE mount
 * (docs/lazyfs.md): QEMU maps <mountpoint>/ram privately; its page faults
 * become FUSE READs that fetch the covering chunks first.
 */
import { readFile, rmdir, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChunkIndex } from '../format/chunk-index.js';
import type { FetchPriority, ObjectSource } from '../store/object-store.js';
import { LazyBlob } from './lazy-blob.js';
import { FUSE_TYPE, SOURCE_PREFIX, mountOneFile, unmountPath, type OneFileMount } from './fuse-server.js';

export interface LazyRamOptions {
  index: ChunkIndex;
  source: ObjectSource;
  /** The complete RAM file's place in the cache (blobs/<index id>). */
  file: string;
  label: string;
  /** Reported owner of the file (the confined QEMU's user). */
  owner?: { uid: number; gid: number };
  /** How long the end of a run may wait for the rest of the RAM (default 120 s; 0: not at all). */
  drainMs?: number;
  /** Where per-run mount points go (default <tmpdir>/hostme-lazyfs). */
  mountRoot?: string;
}

export interface LazyRam {
  /** The file QEMU maps. */
  readonly path: string;
  readonly blob: LazyBlob;
  readonly mount: OneFileMount;
  /** Called when a chunk fails verification from every source (demand: the guest waits for it). */
  onChunkFailed?: (chunk: number, err: unknown, priority: FetchPriority) => void;
  /**
   * Unmounts (QEMU is gone), then by default fetches the rest of the RAM
   * (bounded by drainMs) so the next run needs no network; keeps what is
   * durable. Idempotent.
   */
  close(options?: { drain?: boolean }): Promise<void>;
}

const DRAIN_MS = 120_000;

async function drain(blob: LazyBlob, ms: number): Promise<void> {
  if (ms <= 0 || blob.isComplete || blob.failed) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([blob.fillInBackground([], 'prefetch'), new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

export function defaultMountRoot(): string {
  return join(tmpdir(), 'hostme-lazyfs');
}

/** Mounts the lazy RAM file; throws 'lazyfs-unavailable' where FUSE cannot be used (the caller fetches it whole). */
export async function openLazyRam(options: LazyRamOptions): Promise<LazyRam> {
  const mountRoot = options.mountRoot ?? defaultMountRoot();
  await cleanStaleMounts();
  const handlers: { onChunkFailed?: LazyRam['onChunkFailed'] } = {};
  const blob = await LazyBlob.open({ index: options.index, source: options.source, file: options.file, label: options.label, onChunkFailed: (c, e, p) => handlers.onChunkFailed?.(c, e, p) });
  let mount: OneFileMount;
  try {
    mount = await mountOneFile(blob, { mountpoint: join(mountRoot, `${process.pid}-${randomBytes(4).toString('hex')}`), fileName: 'ram', owner: options.owner });
  } catch (err) {
    await blob.close();
    throw err;
  }
  let closing: Promise<void> | undefined;
  return {
    path: mount.path,
    blob,
    mount,
    set onChunkFailed(handler) {
      handlers.onChunkFailed = handler;
    },
    get onChunkFailed() {
      return handlers.onChunkFailed;
    },
    // QEMU is gone: unmount, then finish the RAM (bounded) so the next run resumes without the network.
    close: ({ drain: draining = true } = {}) => (closing ??= mount.unmount().then(() => drain(blob, draining ? (options.drainMs ?? DRAIN_MS) : 0)).finally(() => blob.close())),
  };
}

/**
 * Unmounts lazy file systems left by hostme processes that died (kill -9:
 * the kernel keeps the mount, every access fails with ENOTCONN). A mount is
 * recognised by its type (fuse.hostme) and source (hostme-lazy:<pid>), and is
 * stale when that pid no longer runs.
 */
export async function cleanStaleMounts(): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const cleaned: string[] = [];
  for (const line of info.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const [fstype, source] = right.split(' ');
    if (fstype !== FUSE_TYPE || !source?.startsWith(SOURCE_PREFIX)) continue;
    const pid = Number(source.slice(SOURCE_PREFIX.length));
    if (!Number.isInteger(pid) || pid <= 0 || alive(pid)) continue;
    const mountpoint = unescapeMountinfo(left.split(' ')[4] ?? '');
    if (!mountpoint.startsWith('/')) continue;
    // A holder of /dev/fuse that lingers (threads of a dying process) keeps the connection: abort it.
    const device = /^(\d+):(\d+)$/.exec(left.split(' ')[2] ?? '');
    if (device) await writeFile(`/sys/fs/fuse/connections/${device[2]}/abort`, '1').catch(() => undefined);
    await unmountPath(mountpoint);
    await rmdir(mountpoint).catch(() => undefined);
    cleaned.push(mountpoint);
  }
  return cleaned;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}
