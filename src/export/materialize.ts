import { open } from 'node:fs/promises';
import { chunkLength, isHole } from '../format/chunk-index.js';
import type { Repository, LoadedImage } from '../repo/repository.js';
import { ExportError } from './errors.js';

export interface MaterializeResult {
  path: string;
  size: number;
  chunks: number;
  holes: number;
  /** Bytes actually written (non-hole chunks). */
  writtenBytes: number;
}

/**
 * Writes disk `diskIndex` of an image as a sparse raw file: the file is
 * truncated to the disk size and only non-hole chunks are written at their
 * offsets, so holes stay holes. Every chunk comes through the repository's
 * verified object store (SHA-256 checked before it is written).
 */
export async function materializeDisk(
  repo: Repository,
  image: LoadedImage,
  outPath: string,
  options: { diskIndex?: number; concurrency?: number; onProgress?: (doneBytes: number, totalBytes: number) => void } = {},
): Promise<MaterializeResult> {
  const diskIndex = options.diskIndex ?? 0;
  const disk = image.manifest.disks[diskIndex];
  if (!disk) throw new ExportError('usage', `${image.manifest.name}@${image.manifest.version} has no disk ${diskIndex} (it has ${image.manifest.disks.length})`);
  const index = await repo.readIndex(disk, repo.objects, `disk ${disk.name}`);
  const work = index.ids.map((id, i) => ({ id, i })).filter(({ id }) => !isHole(id));
  const total = work.reduce((sum, { i }) => sum + chunkLength(index, i), 0);
  let done = 0;
  const handle = await open(outPath, 'w', 0o644);
  try {
    await handle.truncate(disk.size);
    let next = 0;
    const worker = async () => {
      while (next < work.length) {
        const { id, i } = work[next++]!;
        const object = await repo.objects.get({ id, length: chunkLength(index, i) });
        await handle.write(object.data, 0, object.data.length, i * index.chunkSize);
        done += object.data.length;
        options.onProgress?.(done, total);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? 4) }, worker));
  } finally {
    await handle.close();
  }
  return { path: outPath, size: disk.size, chunks: index.ids.length, holes: index.ids.length - work.length, writtenBytes: total };
}
