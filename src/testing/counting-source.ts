import type { GetOptions, ObjectRef, ObjectSource, VerifiedObject } from '../store/object-store.js';

/**
 * An ObjectSource that counts what is read through it (and which ids), with
 * an optional delay per read so a test can stop a fetch half way.
 */
export class CountingSource implements ObjectSource {
  readonly name = 'counting';
  reads = 0;
  readonly ids = new Set<string>();
  constructor(private readonly inner: ObjectSource, private readonly delayMs = 0) {}
  async get(ref: ObjectRef, options?: GetOptions): Promise<VerifiedObject> {
    this.reads++;
    this.ids.add(ref.id);
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    return this.inner.get(ref, options);
  }
  has(id: string): Promise<boolean> {
    return this.inner.has(id);
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}
