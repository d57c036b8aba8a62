import { HOLE_ID, isAllZero } from '../format/digest.js';
import { chunkLength, isHole, type ChunkIndex } from '../format/chunk-index.js';
import { encodeObject } from '../format/node/codecs.js';
import { manifestBlobs, type BlobRef, type Manifest } from '../format/manifest.js';
import type { PublisherKey } from '../format/node/keys.js';
import { HostmeError } from '../errors.js';
import { openRepository, type Repository } from '../repo/repository.js';
import { publishDerived } from '../repo/versions.js';
import { storeIndex } from '../pack/chunker.js';
import type { ObjectSource } from '../store/object-store.js';
import { openImageDisks } from '../device/image-disks.js';
import { CowOverlay, COW_GRANULARITY } from '../device/cow-overlay.js';
import { CacheDir } from './cache-dir.js';
import { Instance } from './instance.js';
import { resolveImage } from './image-source.js';
import { openFileOverlay } from '../device/node/cow-file.js';

export interface CommitRequest {
  instance: string;
  repoDir: string;
  version?: string;
  key: PublisherKey;
  cacheDir?: string;
  onProgress?: (done: number, total: number) => void;
}

export interface CommitResult {
  name: string;
  baseVersion: string;
  version: string;
  changedChunks: number;
  reusedChunks: number;
  copiedObjects: number;
  newStoredBytes: number;
  manifestDigest: string;
}

/**
 * Pack an instance (base image + the guest's writes) as a new version. Chunks
 * the guest never wrote keep their ids without being read; only written chunks
 * are re-hashed. Objects the target repository lacks are copied into it.
 */
export async function commitInstance(request: CommitRequest): Promise<CommitResult> {
  const cache = new CacheDir(request.cacheDir);
  const instance = new Instance(cache.instanceDir(request.instance));
  const record = await instance.record();
  if (!record) throw new HostmeError('instance-not-found', `no instance "${request.instance}" here: run it first with "hostme run"`, { instance: request.instance });
  await instance.lock();
  try {
    const resolved = await resolveImage({ repo: record.repo, name: record.name, version: record.version }, { cache });
    if (resolved.image.digest !== record.manifestDigest) throw new HostmeError('instance-mismatch', `the instance was made from another build of ${record.name}@${record.version}`);
    const target = openRepository(request.repoDir);
    const base = resolved.image.manifest;
    const result: CommitResult = { name: base.name, baseVersion: base.version, version: '', changedChunks: 0, reusedChunks: 0, copiedObjects: 0, newStoredBytes: 0, manifestDigest: '' };
    const disks: Manifest['disks'] = [];
    const opened = await openImageDisks(base, resolved.source, { overlay: (image, i) => openFileOverlay(image, i === 0 ? instance.dir : `${instance.dir}/disk${i}`) });
    try {
      for (const [i, disk] of base.disks.entries()) {
        const { image, overlay } = opened[i]!;
        const ids = await rebuildIndex(image.index, overlay!, target, resolved.source, result, request.onProgress);
        const newIndex = await storeIndex({ ...image.index, ids }, target.objects);
        disks.push({ name: disk.name, size: disk.size, chunkSize: disk.chunkSize, index: newIndex });
      }
    } finally {
      await Promise.all(opened.map((d) => d.overlay?.close()));
    }
    for (const { ref, label } of manifestBlobs(base).filter((b) => !b.label.startsWith('disk'))) {
      await copyBlob(ref, label, resolved.repo, resolved.source, target, result);
    }
    // The prefetch list described the base's boot, not the changed disks'.
    const { prefetch: _dropped, ...rest } = base;
    const published = await publishDerived(target, { manifest: rest, digest: resolved.image.digest }, { disks }, request.key, request.version);
    result.version = published.manifest.version;
    result.manifestDigest = published.digest;
    return result;
  } finally {
    await instance.unlock();
  }
}

async function rebuildIndex(index: ChunkIndex, overlay: CowOverlay, target: Repository, source: ObjectSource, result: CommitResult, onProgress?: (done: number, total: number) => void): Promise<string[]> {
  const ids = [...index.ids];
  const blocksPerChunk = index.chunkSize / COW_GRANULARITY;
  for (let chunk = 0; chunk < ids.length; chunk++) {
    const length = chunkLength(index, chunk);
    let written = false;
    for (let b = 0; b < Math.ceil(length / COW_GRANULARITY) && !written; b++) written = overlay.isWritten(chunk * blocksPerChunk + b);
    if (written) {
      const data = await overlay.read(chunk * index.chunkSize, length);
      if (isAllZero(data)) {
        ids[chunk] = HOLE_ID;
      } else {
        const encoded = encodeObject(data);
        ids[chunk] = encoded.id;
        if (!(await target.objects.has(encoded.id))) {
          await target.objects.put(encoded.id, encoded.stored);
          result.newStoredBytes += encoded.stored.length;
        }
      }
      result.changedChunks++;
    } else if (!isHole(ids[chunk]!)) {
      await ensureObject(ids[chunk]!, length, source, target, result);
      result.reusedChunks++;
    }
    onProgress?.(chunk + 1, ids.length);
  }
  return ids;
}

async function ensureObject(id: string, length: number, source: ObjectSource, target: Repository, result: CommitResult): Promise<void> {
  if (await target.objects.has(id)) return;
  const object = await source.get({ id, length });
  await target.objects.put(id, object.stored);
  result.copiedObjects++;
}

async function copyBlob(ref: BlobRef, label: string, from: Repository, source: ObjectSource, target: Repository, result: CommitResult): Promise<void> {
  const index = await from.readIndex(ref, source, label);
  await storeIndex(index, target.objects);
  for (const [i, id] of index.ids.entries()) if (!isHole(id)) await ensureObject(id, chunkLength(index, i), source, target, result);
}
