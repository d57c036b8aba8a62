import { open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { chunkLength, isHole, type ChunkIndex } from '../format/chunk-index.js';
import { isAllZero } from '../format/digest.js';
import { sha256Hex } from '../format/node/codecs.js';
import type { BlobRef } from '../format/manifest.js';
import type { Repository } from '../repo/repository.js';
import type { ObjectSource } from '../store/object-store.js';

/**
 * Materialize a blob (kernel, initrd, snapshot RAM and device state) as a file
 * QEMU can load. With a `cacheDir`, the file is kept under blobs/<index id>
 * and reused by later runs; without, it is written to `fallbackFile`.
 *
 * Verify once: a file is hashed chunk by chunk when it is written (or found
 * without a stamp); then `blobs/<index id>.verified` records its identity
 * (inode, size, mtime, ctime). A later run whose file still has that identity
 * trusts it without re-reading it; any change to the file (which moves ctime)
 * makes it be checked again. The stamp is written after the file's atomic
 * rename, so a crash can leave a file without a stamp (checked again), never
 * a stamp for a half-written file.
 */
export async function materializeBlob(
  repo: Repository,
  source: ObjectSource,
  ref: BlobRef,
  label: string,
  where: { cacheDir?: string; fallbackFile: string },
  /** Where the chunks come from, if not `source` (the index always comes from `source`, usually the cache). */
  chunkSource: ObjectSource = source,
): Promise<string> {
  const index = await repo.readIndex(ref, source, label);
  if (!where.cacheDir) return writeBlob(index, chunkSource, where.fallbackFile);
  const cached = join(where.cacheDir, 'blobs', ref.index);
  if (await stampMatches(cached)) return cached;
  if (await matchesIndex(cached, index)) return stamp(cached);
  try {
    return await stamp(await writeBlob(index, chunkSource, cached));
  } catch (err) {
    if (!(err as NodeJS.ErrnoException).code) throw err; // a fetch failure, not the file system
    return writeBlob(index, chunkSource, where.fallbackFile); // cache full or read-only
  }
}

async function writeBlob(index: ChunkIndex, source: ObjectSource, file: string): Promise<string> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await mkdir(dirname(file), { recursive: true });
  const handle = await open(tmp, 'w', 0o600);
  try {
    await handle.truncate(index.size);
    await Promise.all(
      index.ids.map(async (id, i) => {
        if (isHole(id)) return;
        const object = await source.get({ id, length: chunkLength(index, i) });
        await handle.write(object.data, 0, object.data.length, i * index.chunkSize);
      }),
    );
    // Durable before it gets its final name (and, with a cache, its verified stamp).
    await handle.datasync();
    await handle.close();
    await rename(tmp, file);
  } catch (err) {
    await handle.close().catch(() => {});
    await rm(tmp, { force: true });
    throw err;
  }
  return file;
}

/** Does the file hold exactly the blob the index describes? */
async function matchesIndex(file: string, index: ChunkIndex): Promise<boolean> {
  const data = await readFile(file).catch(() => null);
  if (!data || data.length !== index.size) return false;
  return index.ids.every((id, i) => {
    const chunk = data.subarray(i * index.chunkSize, i * index.chunkSize + chunkLength(index, i));
    return isHole(id) ? isAllZero(chunk) : sha256Hex(chunk) === id;
  });
}

/** The identity of a file that a stamp records: any write or rename changes it. */
async function identity(file: string): Promise<string | null> {
  const s = await stat(file, { bigint: true }).catch(() => null);
  return s ? `hostme-verified-v1 ino=${s.ino} size=${s.size} mtime=${s.mtimeNs} ctime=${s.ctimeNs}\n` : null;
}

export async function stampMatches(file: string): Promise<boolean> {
  const [expected, recorded] = await Promise.all([identity(file), readFile(`${file}.verified`, 'utf8').catch(() => null)]);
  return expected !== null && expected === recorded;
}

/** Record that `file` was verified (best effort: without a stamp it is only checked again). */
export async function stamp(file: string): Promise<string> {
  const id = await identity(file);
  if (id) {
    const tmp = `${file}.verified.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    await writeFile(tmp, id)
      .then(() => rename(tmp, `${file}.verified`))
      .catch(() => rm(tmp, { force: true }));
  }
  return file;
}
