import { stat } from 'node:fs/promises';
import { DEFAULT_CHUNK_SIZE, validateChunkSize } from '../format/chunk-index.js';
import { MANIFEST_FORMAT_VERSION, imageNamePattern, versionPattern, type BlobRef, type Manifest } from '../format/manifest.js';
import type { PublisherKey } from '../format/node/keys.js';
import type { Repository } from '../repo/repository.js';
import { nextVersion } from '../repo/versions.js';
import { HostmeError } from '../errors.js';
import { chunkFile, type ChunkingStats, type ProgressListener } from './chunker.js';
import { openDiskInput } from './disk-input.js';
import { ChunkWorkerPool } from './worker-pool.js';

/** Blobs fetched whole before the guest runs (kernel, initrd, memory state): slow to pack, fewer bytes to send. */
export const BOOT_BLOB_ZSTD_LEVEL = 15;

export interface PackRequest {
  repo: Repository;
  /** Scratch space for format conversion (same filesystem as the repo is best). */
  workDir: string;
  disk: string;
  name: string;
  version?: string;
  key: PublisherKey;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  memoryMiB?: number;
  cpus?: number;
  arch?: 'x86_64' | 'i686';
  chunkSize?: number;
  description?: string;
  /** The overlay network the image joins by default. */
  network?: { join: string };
  /** Who may host the image as a site (docs/host.md). */
  hosting?: 'open' | 'invite';
  mirrors?: string[];
  onProgress?: (step: string, done: number, total: number) => void;
}

export interface PackSummary {
  name: string;
  version: string;
  inputFormat: string;
  virtualSize: number;
  chunkSize: number;
  chunks: number;
  holes: number;
  newChunks: number;
  reusedChunks: number;
  newStoredBytes: number;
  storedBytes: number;
  seconds: number;
  throughputMBps: number;
  manifestDigest: string;
  keyId: string;
}

export async function packImage(request: PackRequest): Promise<PackSummary> {
  const started = performance.now();
  const chunkSize = request.chunkSize ?? DEFAULT_CHUNK_SIZE;
  validateChunkSize(chunkSize);
  checkName(request.name, request.version);
  const version = request.version ?? (await nextVersion(request.repo, request.name));
  const input = await openDiskInput(request.disk, request.workDir);
  const pool = new ChunkWorkerPool();
  try {
    const progress = (step: string): ProgressListener => (done, total) => request.onProgress?.(step, done, total);
    const disk = await chunkFile(input.rawPath, input.virtualSize, chunkSize, request.repo.objects, pool, progress('disk'));
    const kernel = request.kernel ? await chunkBlob(request.kernel, request, pool, progress('kernel')) : undefined;
    const initrd = request.initrd ? await chunkBlob(request.initrd, request, pool, progress('initrd')) : undefined;
    const manifest: Manifest = {
      formatVersion: MANIFEST_FORMAT_VERSION,
      kind: 'hostme-image',
      name: request.name,
      version,
      created: new Date().toISOString(),
      ...(request.description ? { description: request.description } : {}),
      hardware: { arch: request.arch ?? 'x86_64', memoryMiB: request.memoryMiB ?? 256, cpus: request.cpus ?? 1 },
      boot: kernel
        ? { mode: 'direct', kernel: kernel.ref, ...(initrd ? { initrd: initrd.ref } : {}), cmdline: request.cmdline ?? 'console=ttyS0' }
        : { mode: 'firmware' },
      disks: [{ name: 'disk0', ...disk.ref, storedBytes: disk.stats.storedBytes }],
      mirrors: request.mirrors ?? [],
      ...(request.network ? { network: request.network } : {}),
      ...(request.hosting ? { hosting: request.hosting } : {}),
    };
    const published = await request.repo.publish(manifest, request.key);
    const all = [disk.stats, kernel?.stats, initrd?.stats].filter((s): s is ChunkingStats => s !== undefined);
    const sum = (field: keyof ChunkingStats) => all.reduce((acc, s) => acc + s[field], 0);
    const seconds = (performance.now() - started) / 1000;
    return {
      name: request.name,
      version,
      inputFormat: input.format,
      virtualSize: input.virtualSize,
      chunkSize,
      chunks: sum('chunks'),
      holes: sum('holes'),
      newChunks: sum('newChunks'),
      reusedChunks: sum('reusedChunks'),
      newStoredBytes: sum('newStoredBytes'),
      storedBytes: sum('storedBytes'),
      seconds,
      throughputMBps: input.virtualSize / 1e6 / seconds,
      manifestDigest: published.digest,
      keyId: request.key.keyId,
    };
  } finally {
    await pool.close();
    await input.cleanup();
  }
}

async function chunkBlob(path: string, request: PackRequest, pool: ChunkWorkerPool, onProgress: ProgressListener): Promise<{ ref: BlobRef; stats: ChunkingStats }> {
  const info = await stat(path).catch(() => {
    throw new HostmeError('file-unreadable', `${path}: cannot read this file`, { path });
  });
  if (!info.isFile()) throw new HostmeError('file-unreadable', `${path}: not a regular file`, { path });
  const chunkSize = request.chunkSize ?? DEFAULT_CHUNK_SIZE;
  // Kernels and initrds are fetched whole before boot: spend CPU once at pack time to send fewer bytes.
  const blob = await chunkFile(path, info.size, chunkSize, request.repo.objects, pool, onProgress, BOOT_BLOB_ZSTD_LEVEL);
  return { ref: blob.ref, stats: blob.stats };
}

function checkName(name: string, version?: string): void {
  if (!imageNamePattern.test(name)) {
    throw new HostmeError('name-invalid', `image name "${name}" is invalid: use lowercase letters, digits, ".", "_" or "-" (at most 64)`, { name });
  }
  if (version !== undefined && !versionPattern.test(version)) {
    throw new HostmeError('name-invalid', `version "${version}" is invalid: use letters, digits, ".", "_", "+" or "-" (at most 64)`, { version });
  }
}
