import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generatePublisherKey, parsePrivateKeyPem, type PublisherKey } from '../format/node/keys.js';
import { chunkLength, isHole, type ChunkIndex } from '../format/chunk-index.js';
import type { BlobRef } from '../format/manifest.js';
import { openRepository, type Repository } from '../repo/repository.js';
export { hasCode } from './has-code.js';
import { packImage, type PackRequest } from '../pack/pack-image.js';
import { createKeyFiles, loadPrivateKey } from '../pack/publisher-key.js';

/** Test fixtures shared by the pack, repo and CLI tests. */

export const run = promisify(execFile);

export async function tempDir(prefix = 'hostme-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export function removeDir(dir: string): Promise<void> {
  return rm(dir, { recursive: true, force: true });
}

/**
 * What a publisher's first `hostme keygen` + `hostme pack` leave behind: a key
 * pair at DIR/publisher.key(.pub) and the image packed into REPO_DIR with it.
 */
export async function packWithNewKey(
  dir: string,
  repoDir: string,
  image: Omit<PackRequest, 'repo' | 'workDir' | 'key'>,
): Promise<{ keyFile: string; key: PublisherKey; repo: Repository }> {
  const keyFile = join(dir, 'publisher.key');
  await createKeyFiles(keyFile);
  const key = await loadPrivateKey(keyFile);
  const repo = openRepository(repoDir);
  await packImage({ ...image, repo, workDir: dir, key });
  return { keyFile, key, repo };
}

export function newKey(): PublisherKey {
  return parsePrivateKeyPem(generatePublisherKey().privatePem);
}

/** Deterministic pseudo-random bytes (xorshift32), so test disks are reproducible. */
export function pseudoRandom(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
    if (i + 1 < length) out[i + 1] = (x >>> 8) & 0xff;
    if (i + 2 < length) out[i + 2] = (x >>> 16) & 0xff;
    if (i + 3 < length) out[i + 3] = (x >>> 24) & 0xff;
  }
  return out;
}

/**
 * A raw disk of `mib` MiB: alternating 512 KiB regions of pseudo-random data,
 * zeros and compressible text, so it has holes, raw and zstd objects.
 */
export function makeDiskBytes(mib: number, seed = 1): Uint8Array {
  const disk = new Uint8Array(mib * 1024 * 1024);
  const region = 512 * 1024;
  for (let at = 0, n = 0; at < disk.length; at += region, n++) {
    if (n % 3 === 0) disk.set(pseudoRandom(region, seed * 1000 + n), at);
    else if (n % 3 === 2) disk.set(textRegion(region, `seed ${seed} region ${n}`), at);
  }
  return disk;
}

/** Compressible text whose every line is different (no two chunks alike). */
function textRegion(length: number, tag: string): Uint8Array {
  const lines: string[] = [];
  let total = 0;
  for (let i = 0; total < length; i++) {
    const line = `${tag} line ${i}: the quick brown fox jumps over the lazy dog\n`;
    lines.push(line);
    total += line.length;
  }
  return new TextEncoder().encode(lines.join('')).subarray(0, length);
}

export async function writeDisk(path: string, bytes: Uint8Array): Promise<string> {
  await writeFile(path, bytes);
  return path;
}

/** Overwrite `bytes` at `offset` in a file. */
export async function patchFile(path: string, offset: number, bytes: Uint8Array): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.write(bytes, 0, bytes.length, offset);
  } finally {
    await handle.close();
  }
}

/** Rebuild a blob's content from the repository (holes are zeros). */
export async function readBlob(repo: Repository, ref: BlobRef): Promise<{ index: ChunkIndex; data: Uint8Array }> {
  const index = await repo.readIndex(ref);
  const data = new Uint8Array(ref.size);
  for (const [i, id] of index.ids.entries()) {
    if (isHole(id)) continue;
    const object = await repo.objects.get({ id, length: chunkLength(index, i) });
    data.set(object.data, i * index.chunkSize);
  }
  return { index, data };
}

/** Mount a tmpfs of `size` (e.g. "2m") at `dir`; null when not permitted here. */
export async function mountTmpfs(dir: string, size: string): Promise<(() => Promise<void>) | null> {
  await mkdir(dir, { recursive: true });
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  } catch {
    return null;
  }
  return async () => {
    await run('umount', ['-l', dir]).catch(() => {});
  };
}

/** Fill a file system until only about `leaveBytes` remain. */
export async function fillDisk(dir: string, leaveBytes: number): Promise<void> {
  const { stdout } = await run('df', ['-B1', '--output=avail', dir]);
  const avail = Number(stdout.trim().split('\n').at(-1));
  if (avail > leaveBytes) await writeFile(join(dir, 'filler'), Buffer.alloc(avail - leaveBytes, 7));
}

/**
 * A test's reason to skip, unless this is CI: with CI=true a missing part
 * (Chromium, a guest that failed to build, a tmpfs we may not mount) fails
 * the run instead of passing it quietly.
 */
export function skipUnlessCi(reason: string): string {
  if (process.env.CI === 'true' || process.env.CI === '1') {
    throw new Error(`CI=true: a required part is missing, so this fails instead of skipping: ${reason}`);
  }
  return reason;
}
