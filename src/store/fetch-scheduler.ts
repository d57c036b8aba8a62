import type { ObjectId } from '../format/digest.js';
import { StoreError } from './errors.js';
import type { FetchPriority, GetOptions, ObjectRef, ObjectSource, VerifiedObject } from './object-store.js';

interface Pending {
  ref: ObjectRef;
  priority: FetchPriority;
  promise: Promise<VerifiedObject>;
  resolve: (object: VerifiedObject) => void;
  reject: (err: unknown) => void;
  started: boolean;
}

const RANK: Record<FetchPriority, number> = { demand: 0, prefetch: 1, background: 2 };
/** How far into a queue `preferFirst` looks for a preferred object (a bound on the work per pick). */
const PREFER_SCAN = 512;

/**
 * Sits in front of a source (usually cache → mirrors) and decides what is
 * fetched when:
 *  - concurrent reads of one object share one fetch (single flight);
 *  - at most `concurrency` fetches run at once;
 *  - demand reads (the guest is waiting) always start before queued prefetch,
 *    and a queued prefetch of an object the guest now needs is promoted;
 *  - background fill only uses `backgroundSlots` of the slots so it never
 *    starves demand or prefetch.
 */
export class FetchScheduler implements ObjectSource {
  readonly name: string;
  private readonly pending = new Map<ObjectId, Pending>();
  private readonly queues: Record<FetchPriority, Pending[]> = { demand: [], prefetch: [], background: [] };
  private running = 0;
  private runningBackground = 0;
  /**
   * Objects this machine fetches first among queued prefetch and background
   * reads: those it owns in the swarm's plan, so that the other members, who
   * wait for them from it, get them early (src/store/swarm-plan.ts).
   */
  preferFirst?: (id: ObjectId) => boolean;

  constructor(
    readonly source: ObjectSource,
    private readonly concurrency = 8,
    private readonly backgroundSlots = 2,
  ) {
    this.name = source.name;
  }

  get(ref: ObjectRef, options: GetOptions = {}): Promise<VerifiedObject> {
    const priority = options.priority ?? 'demand';
    const existing = this.pending.get(ref.id);
    if (existing) {
      if (!existing.started && RANK[priority] < RANK[existing.priority]) this.promote(existing, priority);
      return existing.promise;
    }
    let resolve!: (object: VerifiedObject) => void;
    let reject!: (err: unknown) => void;
    const promise = new Promise<VerifiedObject>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const entry: Pending = { ref, priority, promise, resolve, reject, started: false };
    this.pending.set(ref.id, entry);
    this.queues[priority].push(entry);
    this.pump();
    return promise;
  }

  /** The pending fetch (queued or running) of `id`, if any: a peer asking for it may wait for it. */
  inFlight(id: ObjectId): Promise<VerifiedObject> | undefined {
    return this.pending.get(id)?.promise;
  }

  /** Number of fetches waiting or running. */
  get backlog(): number {
    return this.pending.size;
  }

  has(id: ObjectId): Promise<boolean> {
    return this.source.has(id);
  }

  async holdsLocally(id: ObjectId): Promise<boolean> {
    return (await this.source.holdsLocally?.(id)) ?? false;
  }

  async close(): Promise<void> {
    for (const queue of Object.values(this.queues)) {
      for (const entry of queue.splice(0)) {
        this.pending.delete(entry.ref.id);
        entry.reject(new StoreError('store-closed', 'fetch cancelled: the image was closed'));
      }
    }
    await this.source.close();
  }

  private promote(entry: Pending, priority: FetchPriority): void {
    const queue = this.queues[entry.priority];
    queue.splice(queue.indexOf(entry), 1);
    entry.priority = priority;
    this.queues[priority].push(entry);
    this.pump();
  }

  private pump(): void {
    while (this.running < this.concurrency) {
      const entry = this.next();
      if (!entry) return;
      this.start(entry);
    }
  }

  private next(): Pending | undefined {
    if (this.queues.demand.length) return this.queues.demand.shift();
    if (this.queues.prefetch.length) return this.take(this.queues.prefetch);
    if (this.queues.background.length && this.runningBackground < this.backgroundSlots) return this.take(this.queues.background);
    return undefined;
  }

  /** The first preferred entry of a queue (within PREFER_SCAN), else its head. */
  private take(queue: Pending[]): Pending | undefined {
    if (this.preferFirst) {
      const scan = Math.min(queue.length, PREFER_SCAN);
      for (let i = 0; i < scan; i++) if (this.preferFirst(queue[i]!.ref.id)) return queue.splice(i, 1)[0];
    }
    return queue.shift();
  }

  private start(entry: Pending): void {
    entry.started = true;
    this.running++;
    const background = entry.priority === 'background';
    if (background) this.runningBackground++;
    this.source
      .get(entry.ref, { priority: entry.priority })
      .then(entry.resolve, entry.reject)
      .finally(() => {
        this.running--;
        if (background) this.runningBackground--;
        this.pending.delete(entry.ref.id);
        this.pump();
      });
  }
}
