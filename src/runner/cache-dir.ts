import { mkdir, readFile, readdir, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { createHash } from 'node:crypto';
import { DirStore } from '../store/node/dir-store.js';
import { writeFileAtomic } from '../store/node/dir-transport.js';
import { userCacheRoot } from '../user-dirs.js';

/**
 * The machine-wide hostme cache (docs/run.md "Cache"):
 *   objects/ab/<id>                 verified objects, shared by every image and version
 *   images/<repo-key>/<name>/<v>.json  signed manifests seen, for offline starts
 *   blobs/<index id>                kernels, initrds, snapshot RAM/state assembled for QEMU; <id>.verified stamps them as checked
 *   verified/<index id>/data, map   disk chunks already verified and decoded (read again without hashing)
 *   trust.json                      publisher keys pinned on first use
 *   instances/<name>/               per-instance overlay (user data: never evicted)
 */
export class CacheDir {
  readonly root: string;
  readonly objects: DirStore;

  constructor(root?: string) {
    this.root = resolve(root ?? userCacheRoot());
    this.objects = new DirStore(this.root);
  }

  async ensure(): Promise<void> {
    await mkdir(join(this.root, 'objects'), { recursive: true });
  }

  instanceDir(name: string): string {
    return join(this.root, 'instances', name);
  }

  manifestFile(repo: string, name: string, version: string): string {
    return join(this.root, 'images', repoKey(repo), name, `${version}.json`);
  }

  async saveManifest(repo: string, name: string, version: string, envelope: Uint8Array): Promise<void> {
    await writeFileAtomic(this.manifestFile(repo, name, version), envelope);
    await writeFileAtomic(join(this.root, 'images', repoKey(repo), name, 'latest'), new TextEncoder().encode(version));
  }

  /** The last manifest seen for an image: { version, envelope } or null. */
  async cachedManifest(repo: string, name: string, version?: string): Promise<{ version: string; envelope: Uint8Array } | null> {
    const dir = join(this.root, 'images', repoKey(repo), name);
    const resolved = version ?? (await readFile(join(dir, 'latest'), 'utf8').catch(() => null));
    if (!resolved) return null;
    const envelope = await readFile(join(dir, `${resolved}.json`)).catch(() => null);
    return envelope ? { version: resolved, envelope: new Uint8Array(envelope) } : null;
  }

  async usage(): Promise<{ objects: number; bytes: number }> {
    let objects = 0;
    let bytes = 0;
    for await (const info of this.objects.list()) {
      objects++;
      bytes += info.storedBytes;
    }
    return { objects, bytes };
  }

  /** Evict least recently used objects until the cache holds at most maxBytes. */
  async gc(maxBytes: number): Promise<{ removed: number; freedBytes: number; keptBytes: number; strayTempFiles: number }> {
    const strayTempFiles = await this.objects.removeStrayTempFiles();
    const all = [];
    for await (const info of this.objects.list()) all.push(info);
    let total = all.reduce((sum, o) => sum + o.storedBytes, 0);
    all.sort((a, b) => a.lastUsed - b.lastUsed);
    let removed = 0;
    let freedBytes = 0;
    for (const object of all) {
      if (total <= maxBytes) break;
      await this.objects.remove(object.id);
      total -= object.storedBytes;
      freedBytes += object.storedBytes;
      removed++;
    }
    return { removed, freedBytes, keptBytes: total, strayTempFiles };
  }

  /** Drop cached objects and manifests; instances (the users' own writes) stay. */
  async clear(): Promise<void> {
    await rm(join(this.root, 'objects'), { recursive: true, force: true });
    await rm(join(this.root, 'images'), { recursive: true, force: true });
    await rm(join(this.root, 'blobs'), { recursive: true, force: true });
    await rm(join(this.root, 'verified'), { recursive: true, force: true });
  }

  async instances(): Promise<Array<{ name: string; bytes: number }>> {
    const names = await readdir(join(this.root, 'instances')).catch(() => [] as string[]);
    const out = [];
    for (const name of names) {
      const data = await stat(join(this.root, 'instances', name, 'overlay.data')).catch(() => null);
      out.push({ name, bytes: data ? data.blocks * 512 : 0 });
    }
    return out;
  }
}

/** A readable, collision-safe folder name for a repository location. */
export function repoKey(repo: string): string {
  const readable = repo.replace(/^[a-z]+:\/\//i, '').replace(/[^A-Za-z0-9.-]+/g, '_').slice(0, 40);
  return `${readable}-${createHash('sha256').update(repo).digest('hex').slice(0, 8)}`;
}

export function defaultCacheLimit(): number {
  const env = Number(process.env.HOSTME_CACHE_MAX_BYTES);
  return Number.isFinite(env) && env > 0 ? env : 20 * 1024 ** 3;
}
