import { eventChannel as channel } from './events.js';
import type { ObjectId } from '../format/digest.js';
import { isHostmeError, errorMessage } from '../errors.js';
import type { GetOptions, ObjectRef, ObjectSource, ObjectStore, VerifiedObject } from './object-store.js';

/** Payloads: store/events.ts HostmeEvents. */
export const cacheHitChannel = channel('hostme:cache:hit');
export const cacheMissChannel = channel('hostme:cache:miss');
export const cacheRepairedChannel = channel('hostme:cache:repaired');
export const cacheDegradedChannel = channel('hostme:cache:degraded');

/**
 * A local store in front of any source. Hits are verified like every read; a
 * cached object that fails verification is deleted and fetched again. When the
 * cache cannot be written (disk full, read-only) reads keep working uncached
 * and the problem is reported once.
 */
export class CacheStore implements ObjectSource {
  readonly name: string;
  private persisting = true;
  degradedReason?: string;

  constructor(
    readonly cache: ObjectStore,
    readonly upstream: ObjectSource,
    /** Do not wait for the cache write before answering (a page: the Cache API's writes cost the main thread, not the guest). */
    private readonly options: { writeBehind?: boolean } = {},
  ) {
    this.name = `cache(${cache.name}) → ${upstream.name}`;
  }

  async get(ref: ObjectRef, options: GetOptions = {}): Promise<VerifiedObject> {
    const cached = await this.fromCache(ref, options);
    if (cached) {
      cacheHitChannel.publish({ id: ref.id, bytes: cached.stored.length, source: cached.source });
      return cached;
    }
    const object = await this.upstream.get(ref, options);
    cacheMissChannel.publish({ id: ref.id, bytes: object.stored.length, source: object.source, priority: options.priority ?? 'demand' });
    await this.keep(object);
    return object;
  }

  async has(id: ObjectId): Promise<boolean> {
    return (await this.cache.has(id)) || this.upstream.has(id);
  }

  holdsLocally(id: ObjectId): Promise<boolean> {
    return this.cache.has(id).catch(() => false);
  }

  async close(): Promise<void> {
    await Promise.all([this.cache.close(), this.upstream.close()]);
  }

  private async fromCache(ref: ObjectRef, options: GetOptions): Promise<VerifiedObject | null> {
    try {
      return await this.cache.get(ref, options);
    } catch (err) {
      if (isHostmeError(err, 'object-invalid')) {
        await this.cache.remove?.(ref.id).catch(() => {});
        cacheRepairedChannel.publish({ id: ref.id, reason: errorMessage(err) });
      }
      // Genuine object, inconsistent reference: not a cache problem, and upstream would say the same.
      else if (isHostmeError(err, 'object-length-mismatch')) throw err;
      else if (!isHostmeError(err, 'object-missing')) this.degrade(`cache read failed: ${errorMessage(err)}`);
      return null;
    }
  }

  private async keep(object: VerifiedObject): Promise<void> {
    if (!this.persisting) return;
    const writing = this.cache.put(object.id, object.stored).catch((err: unknown) => this.degrade(errorMessage(err)));
    if (!this.options.writeBehind) await writing;
  }

  private degrade(reason: string): void {
    if (!this.persisting) return;
    this.persisting = false;
    this.degradedReason = reason;
    cacheDegradedChannel.publish({ reason });
  }
}
