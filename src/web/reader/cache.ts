// The page's persistent object store, on the Cache API (chosen by measurement
// against IndexedDB and OPFS: see docs/web.md): an ObjectStore, so the core's
// CacheStore puts it in front of the mirrors exactly as a directory is in
// Node. Objects are kept as fetched (possibly zstd) under their id; they are
// content-addressed, so one cache serves every repository and mirror, and
// verified again (decodeObject) whenever they are read back.
import type { Codecs } from '../../format/codecs.js';
import { decodeObject } from '../../format/object-codec.js';
import type { ObjectId } from '../../format/digest.js';
import { StoreError, missing } from '../../store/errors.js';
import type { GetOptions, ObjectRef, ObjectStore, VerifiedObject } from '../../store/object-store.js';

const CACHE_NAME = 'hostme-objects-v1';
const KEY_PREFIX = 'https://objects.hostme.invalid/';

/** The part of the Cache API this store uses (window.caches, or a stand-in). */
export type CacheStorageLike = Pick<CacheStorage, 'open'>;

const NO_CACHE = 'this session runs without caching; a reload will fetch the image again';

export class BrowserCacheStore implements ObjectStore {
  readonly name = 'browser cache';
  private opening: Promise<Cache> | undefined;
  private writeHold: Promise<unknown> = Promise.resolve();
  private readonly writes = new Set<Promise<void>>();
  private failed: StoreError | undefined;

  constructor(
    private readonly codecs: Codecs,
    private readonly storage: CacheStorageLike | undefined = typeof caches === 'undefined' ? undefined : caches,
    /** Called once when persisting stops (no Cache API, quota exceeded), with the message for the page. */
    private readonly onDegraded: (message: string) => void = () => {},
  ) {}

  private degrade(err: StoreError): StoreError {
    if (!this.failed) this.onDegraded(err.message);
    this.failed ??= err;
    return this.failed;
  }

  private open(): Promise<Cache> {
    this.opening ??= (async () => {
      if (!this.storage) throw this.degrade(new StoreError('store-readonly', `This browser offers no Cache API here (not a secure context?): ${NO_CACHE}.`));
      try {
        return await this.storage.open(CACHE_NAME);
      } catch (err) {
        throw this.degrade(new StoreError('store-io', `The browser cache cannot be opened (${(err as Error).message}): ${NO_CACHE}.`));
      }
    })();
    return this.opening;
  }

  async get(ref: ObjectRef, _options?: GetOptions): Promise<VerifiedObject> {
    const res = await (await this.open()).match(KEY_PREFIX + ref.id).catch(() => undefined);
    if (!res) throw missing(this.name, `object ${ref.id}`);
    const stored = new Uint8Array(await res.arrayBuffer());
    const data = await decodeObject(this.codecs, ref.id, ref.length, stored, this.name);
    return { id: ref.id, data, stored, source: this.name };
  }

  async has(id: ObjectId): Promise<boolean> {
    const cache = await this.open().catch(() => undefined);
    return (await cache?.match(KEY_PREFIX + id).catch(() => undefined)) !== undefined;
  }

  /** Resolves once the object is in the cache; writes wait while held (holdWrites). */
  async put(id: ObjectId, stored: Uint8Array): Promise<void> {
    if (this.failed) throw this.failed;
    const cache = await this.open();
    const write = this.writeHold
      .then(() => cache.put(KEY_PREFIX + id, new Response(new Uint8Array(stored), { headers: { 'content-type': 'application/octet-stream' } })))
      .catch((err: unknown) => {
        throw this.degrade(
          isQuotaError(err)
            ? new StoreError('store-full', `Browser storage is full (quota exceeded): ${NO_CACHE}.`)
            : new StoreError('store-io', `Cannot store chunks in the browser cache (${(err as Error).message}): ${NO_CACHE}.`),
        );
      });
    const settled = write.catch(() => {});
    this.writes.add(settled);
    void settled.finally(() => this.writes.delete(settled));
    await write;
  }

  async remove(id: ObjectId): Promise<void> {
    const cache = await this.open().catch(() => undefined);
    await cache?.delete(KEY_PREFIX + id).catch(() => false);
  }

  /**
   * Keep writes queued until `until` settles: Cache API puts cost main-thread
   * time (measured: 0.6 s for the 9 MiB of a memory snapshot) that the start
   * of the machine needs more.
   */
  holdWrites(until: Promise<unknown>): void {
    this.writeHold = until.catch(() => {});
  }

  /** Resolves when every queued write has reached the cache (or failed). */
  async flush(): Promise<void> {
    while (this.writes.size > 0) await Promise.all([...this.writes]);
  }

  async close(): Promise<void> {
    await this.flush();
  }
}

function isQuotaError(err: unknown): boolean {
  return err instanceof DOMException && (err.name === 'QuotaExceededError' || err.code === 22);
}
