// Persistent object cache for the browser reader, on the Cache API (chosen by
// measurement against IndexedDB and OPFS: see docs/web.md). Objects are stored
// as fetched (possibly zstd) under their id; they are content-addressed, so one
// cache serves every repository and mirror, and they are verified again
// whenever they are read back (docs/format.md §2).

const CACHE_NAME = 'hostme-objects-v1';
const KEY_PREFIX = 'https://objects.hostme.invalid/';

export interface ObjectCache {
  get(id: string): Promise<Uint8Array | undefined>;
  put(id: string, stored: Uint8Array): Promise<void>;
  delete(id: string): Promise<void>;
  /** False once persisting is impossible (no Cache API, quota exceeded): the reader keeps going uncached. */
  readonly persisting: boolean;
  /** Why persisting stopped, for the page to show. */
  readonly warning: string | undefined;
}

function isQuotaError(err: unknown): boolean {
  return err instanceof DOMException && (err.name === 'QuotaExceededError' || err.code === 22);
}

export class BrowserObjectCache implements ObjectCache {
  persisting = true;
  warning: string | undefined;
  private cache: Cache | undefined;
  private opening: Promise<Cache | undefined> | undefined;

  constructor(private readonly onWarning?: (message: string) => void) {}

  private disable(message: string): void {
    if (!this.persisting) return;
    this.persisting = false;
    this.warning = message;
    this.onWarning?.(message);
  }

  private open(): Promise<Cache | undefined> {
    this.opening ??= (async () => {
      if (typeof caches === 'undefined') {
        this.disable('This browser offers no Cache API here (not a secure context?): this session runs without caching; a reload will fetch the image again.');
        return undefined;
      }
      try {
        this.cache = await caches.open(CACHE_NAME);
        return this.cache;
      } catch (err) {
        this.disable(`The browser cache cannot be opened (${(err as Error).message}): this session runs without caching; a reload will fetch the image again.`);
        return undefined;
      }
    })();
    return this.opening;
  }

  async get(id: string): Promise<Uint8Array | undefined> {
    const cache = await this.open();
    if (!cache) return undefined;
    try {
      const res = await cache.match(KEY_PREFIX + id);
      return res ? new Uint8Array(await res.arrayBuffer()) : undefined;
    } catch {
      return undefined;
    }
  }

  async put(id: string, stored: Uint8Array): Promise<void> {
    if (!this.persisting) return;
    const cache = await this.open();
    if (!cache) return;
    try {
      await cache.put(KEY_PREFIX + id, new Response(new Uint8Array(stored), { headers: { 'content-type': 'application/octet-stream' } }));
    } catch (err) {
      if (isQuotaError(err)) {
        this.disable('Browser storage is full (quota exceeded): this session runs without caching; a reload will fetch the image again.');
      } else {
        this.disable(`Cannot store chunks in the browser cache (${(err as Error).message}): this session runs without caching; a reload will fetch the image again.`);
      }
    }
  }

  async delete(id: string): Promise<void> {
    const cache = await this.open();
    await cache?.delete(KEY_PREFIX + id).catch(() => false);
  }
}

/** A cache that keeps nothing (tests, or a page asked not to persist). */
export class NoObjectCache implements ObjectCache {
  readonly persisting = false;
  constructor(readonly warning: string | undefined = undefined) {}
  get(): Promise<Uint8Array | undefined> {
    return Promise.resolve(undefined);
  }
  put(): Promise<void> {
    return Promise.resolve();
  }
  delete(): Promise<void> {
    return Promise.resolve();
  }
}
