import { FormatError } from '../format/errors.js';
import { ID_BYTES } from '../format/digest.js';
import { chunkCountFor, chunkLength, decodeIndex, indexByteLength, INDEX_HEADER_BYTES, isHole, type ChunkIndex } from '../format/chunk-index.js';
import type { BlobRef, Manifest } from '../format/manifest.js';
import { isHostmeError } from '../errors.js';
import type { FetchPriority, ObjectSource } from '../store/object-store.js';
import type { BlockDevice } from './block-device.js';
import { ChunkedImageDevice, type ChunkedImageOptions, type VerifiedChunks } from './chunked-image.js';
import { CowOverlay } from './cow-overlay.js';

/**
 * The disk stack of an image, assembled in one place for every reader (run,
 * nbd, commit, snapshot, the benchmarks and the browser):
 *
 *   guest ─ [CowOverlay] ─ ChunkedImageDevice ─ source (FetchScheduler → CacheStore → MirrorGroup → transports)
 *
 * What differs between callers is passed in: the overlay (a file in Node, RAM
 * in a page, none for read-only exports), the verified-chunk files, the
 * memory budget.
 */
export interface ImageDisk {
  /** What the guest reads and writes: the overlay when there is one, else the image. */
  device: BlockDevice;
  image: ChunkedImageDevice;
  overlay?: CowOverlay;
  label: string;
}

export interface OpenImageDisksOptions {
  /** Build the overlay of disk `i` (omit for read-only disks). */
  overlay?: (image: ChunkedImageDevice, disk: number) => Promise<CowOverlay> | CowOverlay;
  /** Verified chunks kept from earlier runs, per disk (a failure to open one only costs speed). */
  verified?: (disk: number, index: ChunkIndex, ref: BlobRef) => Promise<VerifiedChunks | undefined>;
  onFirstAccess?: (disk: number, chunk: number) => void;
  memoryCacheBytes?: number;
}

/** The chunk index of a blob, checked against the manifest's reference. */
export async function readChunkIndex(source: ObjectSource, ref: BlobRef, label = 'blob'): Promise<ChunkIndex> {
  const length = indexByteLength(ref.size, ref.chunkSize);
  const object = await source.get({ id: ref.index, length }).catch((err: unknown) => {
    if (!isHostmeError(err, 'object-length-mismatch')) throw err;
    // The index object is genuine but lists a different number of chunks than the manifest's blob has.
    const actual = Number(err.context.actualLength);
    const listed = Math.max(0, Math.floor((actual - INDEX_HEADER_BYTES) / ID_BYTES));
    const needed = chunkCountFor(ref.size, ref.chunkSize);
    const where = listed > needed ? 'it points past the end of the blob' : 'it does not cover the whole blob';
    throw new FormatError(
      'index-corrupt',
      `${label}: index ${ref.index} lists ${listed} chunks, but the manifest's ${ref.size}-byte blob has ${needed} chunks of ${ref.chunkSize} bytes: ${where}`,
      { index: ref.index, listed, needed },
      { cause: err },
    );
  });
  return decodeIndex(object.data, `${label} index ${ref.index.slice(0, 16)}`, ref);
}

/** The disks of an image, each with its overlay, in manifest order. */
export async function openImageDisks(manifest: Pick<Manifest, 'disks'>, source: ObjectSource, options: OpenImageDisksOptions = {}): Promise<ImageDisk[]> {
  return Promise.all(
    manifest.disks.map(async (disk, i) => {
      const label = `disk ${disk.name}`;
      const index = await readChunkIndex(source, disk, label);
      const verified = await options.verified?.(i, index, disk).catch(() => undefined);
      const imageOptions: ChunkedImageOptions = { label, verified };
      if (options.memoryCacheBytes) imageOptions.memoryCacheBytes = options.memoryCacheBytes;
      const onFirstAccess = options.onFirstAccess;
      if (onFirstAccess) imageOptions.onFirstAccess = (chunk) => onFirstAccess(i, chunk);
      const image = new ChunkedImageDevice(index, source, imageOptions);
      const overlay = options.overlay ? await options.overlay(image, i) : undefined;
      return { device: overlay ?? image, image, overlay, label };
    }),
  );
}

/** A whole blob (kernel, initrd, memory snapshot) in memory, `parallel` chunks in flight. */
export async function readWholeBlob(
  source: ObjectSource,
  ref: BlobRef,
  label: string,
  options: { parallel?: number; priority?: FetchPriority; onChunk?: (bytes: number) => void; onIndex?: (index: ChunkIndex) => void } = {},
): Promise<Uint8Array> {
  const index = await readChunkIndex(source, ref, label);
  options.onIndex?.(index);
  const out = new Uint8Array(ref.size);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < index.ids.length) {
      const i = next++;
      const id = index.ids[i]!;
      const length = chunkLength(index, i);
      if (!isHole(id)) out.set((await source.get({ id, length }, { priority: options.priority ?? 'demand' })).data, i * ref.chunkSize);
      options.onChunk?.(length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.parallel ?? 6, index.ids.length) }, worker));
  return out;
}

/** Overlay factory for a page or a test: writes kept in RAM. */
export function memoryOverlay(image: ChunkedImageDevice): CowOverlay {
  return new CowOverlay(image);
}
