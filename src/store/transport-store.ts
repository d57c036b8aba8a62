import { readdir, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeObject } from '../format/object-codec.js';
import { isObjectId, objectPath, type ObjectId } from '../format/digest.js';
import { MAX_CHUNK_SIZE } from '../format/chunk-index.js';
import type { GetOptions, ObjectRef, ObjectStore, StoredObjectInfo, VerifiedObject } from './object-store.js';
import type { RepoTransport } from './transport.js';
import { DirTransport } from './dir-transport.js';
import { StoreError, missing } from './errors.js';

// Index objects can exceed a chunk: 32 bytes per chunk of a multi-TiB disk.
const MAX_STORED_OBJECT = Math.max(MAX_CHUNK_SIZE + 4096, 64 * 1024 * 1024);

/**
 * The objects/ folder of a repository (or cache) reached through a transport:
 * a directory or a static HTTP server. Every object read is verified here,
 * where it enters.
 */
export class TransportStore implements ObjectStore {
  readonly name: string;

  constructor(readonly transport: RepoTransport) {
    this.name = transport.location;
  }

  async get(ref: ObjectRef, options: GetOptions = {}): Promise<VerifiedObject> {
    const started = performance.now();
    const stored = await this.transport.read(objectPath(ref.id), { signal: options.signal, maxBytes: MAX_STORED_OBJECT });
    const transferMs = performance.now() - started;
    if (!stored) throw missing(this.name, `object ${ref.id}`);
    const data = decodeObject(ref.id, ref.length, stored, this.name);
    return { id: ref.id, data, stored, source: this.name, transferMs };
  }

  async has(id: ObjectId): Promise<boolean> {
    if (this.transport.exists) return this.transport.exists(objectPath(id));
    return (await this.transport.read(objectPath(id))) !== null;
  }

  async put(id: ObjectId, stored: Uint8Array): Promise<void> {
    if (!this.transport.write) throw new StoreError('store-readonly', `${this.name} is read-only`);
    // No fsync per object: objects are verified on every read, and publishers
    // sync() once before writing the manifest that refers to them.
    await this.transport.write(objectPath(id), stored, { durable: false });
  }

  async close(): Promise<void> {
    await this.transport.close?.();
  }
}

/** A TransportStore over a local directory, which can also list, touch and delete (cache gc). */
export class DirStore extends TransportStore {
  readonly dir: DirTransport;
  private readonly touched = new Set<string>();

  constructor(root: string) {
    const dir = new DirTransport(root);
    super(dir);
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
