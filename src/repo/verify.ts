import { isHole } from '../format/chunk-index.js';
import { chunkLength } from '../format/chunk-index.js';
import { manifestBlobs } from '../format/manifest.js';
import { errorMessage, isHostmeError } from '../errors.js';
import type { ObjectSource } from '../store/object-store.js';
import type { Repository, TrustOptions } from './repository.js';

export interface BadObject {
  blob: string;
  /** Chunk numbers within the blob that reference this object. */
  chunks: number[];
  id: string;
  problem: 'missing' | 'invalid' | 'unreadable';
  detail: string;
  /** Where it was read from: the object's URL or file path. */
  where: string;
}

export interface VerifyReport {
  image: string;
  version: string;
  signer: string;
  manifestDigest: string;
  objectsChecked: number;
  bytesChecked: number;
  bad: BadObject[];
  ok: boolean;
}

/**
 * Check the signature, every index and every object an image references.
 * Signature and index problems throw; bad objects are collected so the user
 * sees all of them at once.
 */
export async function verifyImage(
  repo: Repository,
  name: string,
  version: string | undefined,
  options: TrustOptions & { source?: ObjectSource; concurrency?: number; onProgress?: (done: number, total: number) => void } = {},
): Promise<VerifyReport> {
  const image = await repo.loadImage(name, version, options);
  const source = options.source ?? repo.objects;
  const jobs = new Map<string, { blob: string; chunks: number[]; length: number }>();
  for (const { label, ref } of manifestBlobs(image.manifest)) {
    const index = await repo.readIndex(ref, source, label);
    index.ids.forEach((id, i) => {
      if (isHole(id)) return;
      const job = jobs.get(id) ?? { blob: label, chunks: [], length: chunkLength(index, i) };
      if (job.blob === label) job.chunks.push(i);
      jobs.set(id, job);
    });
  }
  const bad: BadObject[] = [];
  let bytesChecked = 0;
  let done = 0;
  const queue = [...jobs.entries()];
  const worker = async () => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      const [id, job] = next;
      try {
        const object = await source.get({ id, length: job.length });
        bytesChecked += object.stored.length;
      } catch (err) {
        const problem = isHostmeError(err, 'object-missing') ? 'missing' : isHostmeError(err, 'object-invalid') ? 'invalid' : 'unreadable';
        bad.push({ blob: job.blob, chunks: job.chunks, id, problem, detail: errorMessage(err), where: objectLocation(repo, id) });
      }
      options.onProgress?.(++done, jobs.size);
    }
  };
  await Promise.all(Array.from({ length: options.concurrency ?? 8 }, worker));
  bad.sort((a, b) => a.blob.localeCompare(b.blob) || a.chunks[0]! - b.chunks[0]!);
  return {
    image: name,
    version: image.manifest.version,
    signer: image.signer.keyId,
    manifestDigest: image.digest,
    objectsChecked: jobs.size,
    bytesChecked,
    bad,
    ok: bad.length === 0,
  };
}

function objectLocation(repo: Repository, id: string): string {
  return `${repo.location}/objects/${id.slice(0, 2)}/${id}`;
}
