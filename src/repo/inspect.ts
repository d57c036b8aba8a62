import { indexStats, isHole } from '../format/chunk-index.js';
import { manifestBlobs, type Manifest } from '../format/manifest.js';
import type { Repository, TrustOptions } from './repository.js';

export interface BlobReport {
  label: string;
  size: number;
  chunkSize: number;
  chunks: number;
  holes: number;
  distinctObjects: number;
  storedBytes?: number;
}

export interface InspectReport {
  manifest: Manifest;
  signer: string;
  manifestDigest: string;
  blobs: BlobReport[];
  /** For every other image version in the repo: how many of this image's distinct objects it shares. */
  sharing: Array<{ image: string; version: string; sharedObjects: number; share: number }>;
}

export async function inspectImage(repo: Repository, name: string, version: string | undefined, trust: TrustOptions = {}): Promise<InspectReport> {
  const image = await repo.loadImage(name, version, trust);
  const mine = new Set<string>();
  const blobs: BlobReport[] = [];
  for (const { label, ref } of manifestBlobs(image.manifest)) {
    const index = await repo.readIndex(ref, repo.objects, label);
    const stats = indexStats(index);
    index.ids.forEach((id) => !isHole(id) && mine.add(id));
    const storedBytes = 'storedBytes' in ref ? (ref as { storedBytes?: number }).storedBytes : undefined;
    blobs.push({ label, size: ref.size, chunkSize: ref.chunkSize, chunks: stats.chunks, holes: stats.holes, distinctObjects: stats.distinct, ...(storedBytes !== undefined ? { storedBytes } : {}) });
  }
  const sharing: InspectReport['sharing'] = [];
  const listing = await repo.listing();
  for (const [otherName, entry] of Object.entries(listing.images)) {
    for (const { version: otherVersion } of entry.versions) {
      if (otherName === name && otherVersion === image.manifest.version) continue;
      const other = await repo.loadImage(otherName, otherVersion).catch(() => null);
      if (!other) continue;
      const theirs = new Set<string>();
      for (const { label, ref } of manifestBlobs(other.manifest)) {
        const index = await repo.readIndex(ref, repo.objects, label).catch(() => null);
        index?.ids.forEach((id) => theirs.add(id));
      }
      let shared = 0;
      for (const id of mine) if (theirs.has(id)) shared++;
      sharing.push({ image: otherName, version: otherVersion, sharedObjects: shared, share: mine.size ? shared / mine.size : 0 });
    }
  }
  return { manifest: image.manifest, signer: image.signer.keyId, manifestDigest: image.digest, blobs, sharing };
}
