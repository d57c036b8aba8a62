import { open } from 'node:fs/promises';
import { chunkLength, isHole } from '../format/chunk-index.js';
import type { BlobRef } from '../format/manifest.js';
import type { Repository } from '../repo/repository.js';
import type { ObjectSource } from '../store/object-store.js';

/** Materialize a blob (kernel, initrd) into a local file, chunk by chunk, verified. */
export async function writeBlobToFile(repo: Repository, source: ObjectSource, ref: BlobRef, file: string, label: string): Promise<void> {
  const index = await repo.readIndex(ref, source, label);
  const handle = await open(file, 'w', 0o600);
  try {
    await handle.truncate(ref.size);
    await Promise.all(
      index.ids.map(async (id, i) => {
        if (isHole(id)) return;
        const object = await source.get({ id, length: chunkLength(index, i) });
        await handle.write(object.data, 0, object.data.length, i * index.chunkSize);
      }),
    );
  } finally {
    await handle.close();
  }
}
