import { readdir, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { isObjectId, objectPath, type ObjectId } from '../../format/digest.js';
import type { Codecs } from '../../format/codecs.js';
import { nodeCodecs } from '../../format/node/codecs.js';
import type { GetOptions, ObjectRef, StoredObjectInfo, VerifiedObject } from '../object-store.js';
import { TransportStore } from '../transport-store.js';
import { DirTransport } from './dir-transport.js';

/** A TransportStore over a local directory, which can also list, touch and delete (cache gc). */
export class DirStore extends TransportStore {
  readonly dir: DirTransport;
  private readonly touched = new Set<string>();

  constructor(root: string, codecs: Codecs = nodeCodecs) {
    const dir = new DirTransport(root);
    super(dir, codecs);
    this.dir = dir;
  }

  override async get(ref: ObjectRef, options: GetOptions = {}): Promise<VerifiedObject> {
    const object = await super.get(ref, options);
    // Record use for LRU eviction (mounts with noatime would not); once per object per process is enough,
    // and off the read path: the reader waits for the bytes, not for the timestamp.
    if (!this.touched.has(ref.id)) {
      this.touched.add(ref.id);
      const now = new Date();
      void utimes(this.dir.fullPath(objectPath(ref.id)), now, now).catch(() => {});
    }
    return object;
  }

  async remove(id: ObjectId): Promise<void> {
    await rm(this.dir.fullPath(objectPath(id)), { force: true });
  }

  async *list(): AsyncIterable<StoredObjectInfo> {
    const objects = join(this.dir.root, 'objects');
    const prefixes = await readdir(objects).catch(() => [] as string[]);
    for (const prefix of prefixes.sort()) {
      const names = await readdir(join(objects, prefix)).catch(() => [] as string[]);
      for (const name of names) {
        if (!isObjectId(name)) continue;
        const info = await stat(join(objects, prefix, name)).catch(() => null);
        if (info) yield { id: name, storedBytes: info.size, lastUsed: Math.max(info.atimeMs, info.mtimeMs) };
      }
    }
  }

  /** Remove leftovers of writes interrupted by a crash. */
  async removeStrayTempFiles(): Promise<number> {
    const objects = join(this.dir.root, 'objects');
    let removed = 0;
    for (const prefix of await readdir(objects).catch(() => [] as string[])) {
      for (const name of await readdir(join(objects, prefix)).catch(() => [] as string[])) {
        if (name.includes('.tmp-')) {
          await rm(join(objects, prefix, name), { force: true });
          removed++;
        }
      }
    }
    return removed;
  }
}
