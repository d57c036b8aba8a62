/**
 * What a visitor's tab reads first when it resumes an image's memory
 * snapshot, as same-origin paths in that order (the run page's scripts, the
 * snapshot's chunk index, its non-hole chunks): rendered into the image and
 * run pages (`data-hostme-warm`) so the browser can fetch them on intent or
 * before the manifest is verified (src/web/warm.ts). Only paths: the reader
 * verifies everything it uses, and these are public objects anyway.
 */
import type { Manifest } from '../format/manifest.js';
import { isHole } from '../format/chunk-index.js';
import type { RepoView } from './repo-view.js';
import { snapshotMismatch } from '../web/reader/v86-machine.js';
import { v86PackageVersion } from '../snapshot/v86-install.js';

/** The run page's own files, which a first visit downloads (and then revalidates). */
export const RUN_PAGE_ASSETS = ['/_hostme/run.js', '/_hostme/libv86.mjs', '/_hostme/v86.wasm', '/_hostme/bios.bin', '/_hostme/vgabios.bin', '/_hostme/xterm.css'];

const MAX_CACHED = 64;
const cached = new Map<string, string[]>();

function objectPath(id: string): string {
  return `/objects/${id.slice(0, 2)}/${id}`;
}

/** The snapshot's index and chunk paths ([] without a memory snapshot the page can resume, or when the index cannot be read). */
export async function snapshotWarmPaths(view: RepoView, manifest: Manifest): Promise<string[]> {
  const ref = manifest.memorySnapshot;
  // A snapshot the served v86 cannot load means a cold boot: warming it would only compete with the kernel.
  if (!ref || snapshotMismatch(ref, v86PackageVersion())) return [];
  const hit = cached.get(ref.index);
  if (hit) return hit;
  try {
    const index = await view.repo.readIndex(ref, view.repo.objects, 'memory snapshot');
    const paths = [objectPath(ref.index), ...[...new Set(index.ids.filter((id) => !isHole(id)))].map(objectPath)];
    if (cached.size >= MAX_CACHED) cached.delete(cached.keys().next().value!);
    cached.set(ref.index, paths);
    return paths;
  } catch {
    return []; // a page without hints still works: the reader fetches and reports
  }
}
