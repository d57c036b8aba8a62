import { HostmeError } from '../errors.js';
import { isHole, chunkLength, indexByteLength } from '../format/chunk-index.js';
import { manifestBlobs } from '../format/manifest.js';
import { objectPath } from '../format/digest.js';
import { keyPath, manifestPath, REPO_MARKER } from './layout.js';
import type { Repository } from './repository.js';

export interface PushResult {
  image: string;
  objects: number;
  uploaded: number;
  skipped: number;
  bytes: number;
}

/**
 * Copy one image version to another repository (usually HTTP with a token):
 * objects the target lacks first, then the key and marker, the manifest, and
 * the listing last, so the image appears on the target only when complete.
 */
export async function pushImage(from: Repository, to: Repository, name: string, version: string | undefined, onProgress?: (done: number, total: number) => void): Promise<PushResult> {
  const image = await from.loadImage(name, version);
  const write = to.transport.write?.bind(to.transport);
  if (!write) throw new HostmeError('store-readonly', `${to.location} is read-only`);
  const objects = new Map<string, number>();
  for (const { label, ref } of manifestBlobs(image.manifest)) {
    objects.set(ref.index, indexByteLength(ref.size, ref.chunkSize));
    const index = await from.readIndex(ref, from.objects, label);
    index.ids.forEach((id, i) => !isHole(id) && objects.set(id, chunkLength(index, i)));
  }
  const result: PushResult = { image: `${name}@${image.manifest.version}`, objects: objects.size, uploaded: 0, skipped: 0, bytes: 0 };
  const queue = [...objects.entries()];
  let done = 0;
  const worker = async () => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      const [id, length] = next;
      if (await to.objects.has(id)) {
        result.skipped++;
      } else {
        const object = await from.objects.get({ id, length });
        await write(objectPath(id), object.stored);
        result.uploaded++;
        result.bytes += object.stored.length;
      }
      onProgress?.(++done, objects.size);
    }
  };
  await Promise.all(Array.from({ length: 6 }, worker));
  // Nothing that exists is rewritten: the marker and key are the same bytes anyway, and a version is never replaced.
  const present = (path: string) => (to.transport.exists ? to.transport.exists(path) : to.transport.read(path).then((b) => b !== null));
  const marker = await from.transport.read(REPO_MARKER);
  if (marker && !(await present(REPO_MARKER))) await write(REPO_MARKER, marker);
  const keyFile = keyPath(image.signer.keyId);
  const key = await from.transport.read(keyFile);
  if (key && !(await present(keyFile))) await write(keyFile, key);
  const target = manifestPath(name, image.manifest.version);
  const existing = await to.transport.read(target);
  if (existing && Buffer.compare(Buffer.from(existing), Buffer.from(image.envelope)) !== 0) {
    throw new HostmeError('push-version-exists', `${to.location} already has ${name}@${image.manifest.version} with other content; a published version is never rewritten: publish a new version`, { image: result.image });
  }
  // Every object is there before the manifest that names them: an interrupted push leaves at worst unreferenced objects.
  if (!existing) await write(target, image.envelope);
  await to.updateListing(image);
  return result;
}
