/**
 * A bounded in-memory cache of immutable repository objects (objects/XX/ID).
 * Every visitor of an image reads the same boot set, so the hot path of a
 * busy server is the same few hundred objects: answering them from memory
 * skips path resolution, open, stat and a file stream per request. Objects
 * never change (their name is the SHA-256 of their content), so an entry is
 * never stale; least recently used entries go first once `maxBytes` is
 * reached, and objects larger than `maxObjectBytes` are never kept.
 */
export interface HotObject {
  body: Buffer;
  lastModified: string;
  /** Its plain-200 header block, computed on first use by the fast path (static-files.ts). */
  headers?: string[];
}

export class HotObjects {
  private readonly entries = new Map<string, HotObject>();
  private bytes = 0;

  constructor(
    readonly maxBytes = 64 * 1024 * 1024,
    readonly maxObjectBytes = 4 * 1024 * 1024,
  ) {}

  get(id: string): HotObject | undefined {
    const hit = this.entries.get(id);
    if (hit) {
      // Map order is insertion order: re-insert to mark as most recently used.
      this.entries.delete(id);
      this.entries.set(id, hit);
    }
    return hit;
  }

  wants(size: number): boolean {
    return size <= this.maxObjectBytes && size <= this.maxBytes;
  }

  set(id: string, object: HotObject): void {
    if (!this.wants(object.body.length) || this.entries.has(id)) return;
    this.entries.set(id, object);
    this.bytes += object.body.length;
    for (const [oldest, entry] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.bytes -= entry.body.length;
    }
  }

  get size(): { objects: number; bytes: number } {
    return { objects: this.entries.size, bytes: this.bytes };
  }
}
