import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Manifest } from '../format/manifest.js';
import type { BootOnceRequest } from '../runner/profile.js';
import { HostmeError } from '../errors.js';
import { openRepository, type Repository } from '../repo/repository.js';
import { BOOT_BLOB_ZSTD_LEVEL } from '../pack/pack-image.js';
import { publishDerived } from '../repo/versions.js';
import { chunkFile } from '../pack/chunker.js';
import { ChunkWorkerPool } from '../pack/worker-pool.js';
import { DEFAULT_CHUNK_SIZE } from '../format/chunk-index.js';
import { SNAPSHOT_CMDLINE_EXTRA, VGA_MEMORY_BYTES, guestMemoryBytes, v86EmulatorId } from '../web/reader/v86-machine.js';
import { NodeMachine } from './node-machine.js';
import { memoryOverlay, openImageDisks, readWholeBlob } from '../device/image-disks.js';
import { v86PackageVersion } from './v86-install.js';
import { snapshotQemuImage, type QemuSnapshotRequest } from './qemu-snapshot.js';

export interface SnapshotRequest extends BootOnceRequest, Pick<QemuSnapshotRequest, 'append' | 'guestCommand' | 'afterResume' | 'accel' | 'cacheDir'> {
  /** After the match, wait until the console is quiet this long (the prompt is printed) before saving. */
  quietMs?: number;
  onStep?: (step: SnapshotStep, detail: string) => void;
}

export type SnapshotStep = 'boot' | 'save' | 'pack' | 'working-set' | 'publish';

export interface SnapshotResult {
  name: string;
  baseVersion: string;
  version: string;
  emulator: string;
  msToReady: number;
  stateBytes: number;
  storedBytes: number;
  newStoredBytes: number;
  chunks: number;
  manifestDigest: string;
  /** QEMU snapshots: RAM chunks a trial resume read, recorded as the working set (fetched first by a resume). */
  workingSetChunks?: number;
  /** QEMU snapshots published without a working set: why. */
  workingSetSkipped?: string;
}

/**
 * Boot an i686 image once in v86 under Node, save the whole machine at the
 * ready point and publish it as the memorySnapshot of a new signed version
 * (docs/web.md "Memory snapshots"). The run page restores it instead of
 * booting: a click-to-shell in seconds.
 */
export async function snapshotImage(request: SnapshotRequest): Promise<SnapshotResult> {
  const repo = openRepository(request.repoDir);
  const base = await repo.loadImage(request.name, request.version, { trusted: [request.key] });
  const m = base.manifest;
  // x86_64 images are saved by QEMU (hostme run resumes them); i686 ones by v86 (the browser does).
  if (m.hardware.arch === 'x86_64') return snapshotQemuImage({ ...request, version: m.version });
  const boot = checkSnapshottable(m);
  const [kernel, initrd, disks] = await Promise.all([
    readWholeBlob(repo.objects, boot.kernel, 'kernel'),
    boot.initrd ? readWholeBlob(repo.objects, boot.initrd, 'initrd') : undefined,
    openImageDisks(m, repo.objects, { overlay: memoryOverlay }),
  ]);
  const memoryBytes = guestMemoryBytes(m.hardware.memoryMiB, initrd?.length ?? 0);

  request.onStep?.('boot', `booting ${m.name}@${m.version} in v86 until ${request.until}`);
  const started = performance.now();
  const machine = await NodeMachine.start({
    start: { kind: 'boot', kernel, ...(initrd ? { initrd } : {}), cmdline: `${boot.cmdline} ${SNAPSHOT_CMDLINE_EXTRA}` },
    disk: disks[0]!,
    memoryBytes,
    vgaMemoryBytes: VGA_MEMORY_BYTES,
  });
  let state: Uint8Array;
  let msToReady: number;
  try {
    await machine.waitFor(request.until, request.timeoutMs ?? 300_000);
    msToReady = Math.round(performance.now() - started);
    await machine.settle(request.quietMs ?? 500, 10_000);
    request.onStep?.('save', 'saving the machine state');
    state = await machine.save();
  } finally {
    await machine.destroy();
  }
  return publishSnapshot(repo, request, base, state, memoryBytes, msToReady);
}

function checkSnapshottable(m: Manifest): Extract<Manifest['boot'], { mode: 'direct' }> {
  const label = `${m.name}@${m.version}`;
  if (m.boot.mode !== 'direct') {
    throw new HostmeError('snapshot-unsupported', `${label} boots from firmware: hostme snapshot needs a direct kernel boot (boot.kernel in the build manifest)`);
  }
  return m.boot;
}

async function publishSnapshot(
  repo: Repository,
  request: SnapshotRequest,
  base: { manifest: Manifest; digest: string },
  state: Uint8Array,
  memoryBytes: number,
  msToReady: number,
): Promise<SnapshotResult> {
  request.onStep?.('pack', `packing ${state.length} bytes of machine state`);
  const work = await mkdtemp(join(tmpdir(), 'hostme-snapshot-'));
  const pool = new ChunkWorkerPool();
  try {
    const file = join(work, 'state.bin');
    await writeFile(file, state).catch((err: NodeJS.ErrnoException) => {
      throw new HostmeError('snapshot-write-failed', `cannot write the ${state.length}-byte machine state to ${work} (${err.code}): free some space or point TMPDIR elsewhere; nothing was published`, { file });
    });
    const chunkSize = base.manifest.disks[0]?.chunkSize ?? DEFAULT_CHUNK_SIZE;
    const blob = await chunkFile(file, state.length, chunkSize, repo.objects, pool, undefined, BOOT_BLOB_ZSTD_LEVEL);
    const emulator = v86EmulatorId(v86PackageVersion());
    request.onStep?.('publish', `publishing ${request.name}@${request.newVersion ?? 'next version'}`);
    const memorySnapshot = { ...blob.ref, emulator, memoryBytes, vgaMemoryBytes: VGA_MEMORY_BYTES };
    const published = await publishDerived(repo, base, { memorySnapshot }, request.key, request.newVersion);
    const version = published.manifest.version;
    return {
      name: request.name,
      baseVersion: base.manifest.version,
      version,
      emulator,
      msToReady,
      stateBytes: state.length,
      storedBytes: blob.stats.storedBytes,
      newStoredBytes: blob.stats.newStoredBytes,
      chunks: blob.stats.chunks,
      manifestDigest: published.digest,
    };
  } finally {
    await pool.close();
    await rm(work, { recursive: true, force: true });
  }
}
