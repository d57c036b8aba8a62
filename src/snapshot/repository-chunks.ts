import { chunkLength, isHole, type ChunkIndex } from '../format/chunk-index.js';
import type { BlobRef } from '../format/manifest.js';
import type { Repository } from '../repo/repository.js';
import type { ChunkReader } from '../web/reader/v86-disk.js';

/**
 * Verified chunks of a repository's blobs, for v86 under Node: the same
 * ChunkReader role the page's ImageReader plays, backed by the repository's
 * object store (which checks every object's hash on read).
 */
export class RepositoryChunks implements ChunkReader {
  private readonly indexes = new Map<string, Promise<ChunkIndex>>();

  constructor(private readonly repo: Repository) {}

  private index(ref: BlobRef, label: string): Promise<ChunkIndex> {
    let index = this.indexes.get(ref.index);
    if (!index) {
      index = this.repo.readIndex(ref, this.repo.objects, label);
      this.indexes.set(ref.index, index);
    }
    return index;
  }

  async readChunk(ref: BlobRef, i: number, label: string): Promise<Uint8Array> {
    const index = await this.index(ref, label);
    const id = index.ids[i];
    if (id === undefined) throw new RangeError(`${label}: chunk ${i} is past the end (${index.ids.length} chunks)`);
    const length = chunkLength(index, i);
    if (isHole(id)) return new Uint8Array(length);
    return (await this.repo.objects.get({ id, length })).data;
  }

  /** A whole blob (kernel, initrd) in memory. */
  async readBlob(ref: BlobRef, label: string): Promise<Uint8Array> {
    const index = await this.index(ref, label);
    const out = new Uint8Array(ref.size);
    await Promise.all(index.ids.map(async (_, i) => out.set(await this.readChunk(ref, i, label), i * ref.chunkSize)));
    return out;
  }
}
