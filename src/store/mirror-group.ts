import { eventChannel as channel, unrefTimer } from './events.js';
import type { ObjectId } from '../format/digest.js';
import { isHostmeError, errorMessage } from '../errors.js';
import type { GetOptions, ObjectRef, ObjectSource, VerifiedObject } from './object-store.js';
import { StoreError } from './errors.js';
import type { SwarmPlan } from './swarm-plan.js';

/** Payloads: store/events.ts HostmeEvents. */
export const mirrorDemotedChannel = channel('hostme:mirror:demote');
export const mirrorFailoverChannel = channel('hostme:mirror:failover');
export const peerDroppedChannel = channel('hostme:peer:dropped');

/**
 * 'mirror': the repository or a mirror it lists (or the user named): a
 * fallback that stays. 'peer': another machine's cache found through a
 * tracker: untrusted, preferred for prefetch, dropped for good on wrong bytes
 * or repeated failures, and given only a short window on demand reads.
 */
export type SourceKind = 'mirror' | 'peer';

export interface PeerSourceOptions {
  /** Starting latency estimate in ms. */
  latencyMs?: number;
  /**
   * On this machine's own network: tried before any mirror on demand reads
   * too while it answers (a LAN beats a WAN link; latencies measured under
   * different loads are not comparable, and the window bounds a wrong guess).
   */
  lan?: boolean;
  /** How long a demand read waits for a peer before moving on (default 750 ms + 1 ms per 4 KiB). */
  windowMs?: number;
  /** Called once when the peer is dropped (report it to the tracker). */
  onDropped?: (reason: string, wrongBytes: boolean) => void;
  /** Its member key in the swarm's plan (tracker address:port): objects it owns are asked of it first, with a wait. */
  member?: string;
}

interface MirrorState {
  source: ObjectSource;
  /** Smoothed latency in ms (EWMA); lower ranks first. */
  latencyMs: number;
  failures: number;
  /** Served bytes that did not match their id: ranked after every honest mirror. */
  lying: boolean;
  served: number;
  kind: SourceKind;
  peer?: PeerSourceOptions;
  /** Failures in a row (a peer is dropped after a few). */
  streak: number;
}

const PEER_DROP_STREAK = 3;
/** How long a prefetch lets the owner of an object hold the request while it fetches it from the origin. */
const PREFETCH_WAIT_MS = 8000;
/** How long the peers other than an object's owner get to say whether they hold it. */
const PROBE_MS = 500;

/**
 * A failover group of mirrors of one repository. Reads go to the best-ranked
 * mirror (smoothed transfer time, as the transport measured it: decoding and
 * hashing on our CPU are not the mirror's fault); on a network failure or a missing object the next
 * one is tried; a mirror that returns wrong bytes is demoted and reported, and
 * the object is fetched elsewhere.
 */
export class MirrorGroup implements ObjectSource {
  readonly name: string;
  private mirrors: MirrorState[];
  /** Who fetches what from the origin when peers start together (set by the swarm). */
  private plan?: SwarmPlan;

  constructor(sources: ObjectSource[]) {
    if (sources.length === 0) throw new StoreError('store-unavailable', 'a mirror group needs at least one mirror');
    this.mirrors = sources.map((source, i) => ({ source, latencyMs: 50 + i, failures: 0, lying: false, served: 0, kind: 'mirror' as const, streak: 0 }));
    this.name = sources.length === 1 ? sources[0]!.name : `mirrors(${sources.map((s) => s.name).join(' | ')})`;
  }

  /** Mirrors in the order reads will try them. */
  ranking(): Array<{ name: string; latencyMs: number; failures: number; lying: boolean; served: number; kind: SourceKind }> {
    return this.ordered().map((m) => ({ name: m.source.name, latencyMs: Math.round(m.latencyMs), failures: m.failures, lying: m.lying, served: m.served, kind: m.kind }));
  }

  /** Adds untrusted peers (found through a tracker) after the group was built. */
  addPeers(sources: ObjectSource[], options: PeerSourceOptions = {}): void {
    const known = new Set(this.mirrors.map((m) => m.source.name));
    for (const source of sources) {
      if (known.has(source.name)) continue;
      known.add(source.name);
      this.mirrors.push({ source, latencyMs: options.latencyMs ?? 10, failures: 0, lying: false, served: 0, kind: 'peer', peer: options, streak: 0 });
    }
  }

  /** Coordinate first fetches with the swarm's other members (src/store/swarm-plan.ts). */
  setPlan(plan: SwarmPlan): void {
    this.plan = plan;
  }

  /** Whether this machine owns `id` in the swarm's plan (it fetches it from the origin for the others). */
  assignedHere(id: ObjectId): boolean {
    const owner = this.ownerOf(id);
    return owner === 'self';
  }

  /** The owner of `id` among this machine and the live peers that have member keys; undefined without a plan. */
  private ownerOf(id: ObjectId): MirrorState | 'self' | undefined {
    if (!this.plan) return undefined;
    const byMember = new Map<string, MirrorState>();
    for (const m of this.mirrors) if (m.kind === 'peer' && m.peer?.member && !m.lying) byMember.set(m.peer.member, m);
    if (byMember.size === 0) return undefined;
    const owner = this.plan.owner(id, byMember.keys());
    return owner === undefined ? undefined : owner === this.plan.self ? 'self' : byMember.get(owner);
  }

  /** Takes a peer out of the group for good and says why (once). */
  private drop(mirror: MirrorState, id: string, reason: string, wrongBytes: boolean): void {
    if (!this.mirrors.includes(mirror)) return;
    this.mirrors = this.mirrors.filter((m) => m !== mirror);
    peerDroppedChannel.publish({ peer: mirror.source.name, id, reason, wrongBytes });
    mirror.peer?.onDropped?.(reason, wrongBytes);
    void mirror.source.close().catch(() => {});
  }

  /**
   * Time one request per mirror, all at once, so the first real reads go to
   * the fastest. A mirror that fails or does not answer within `deadlineMs`
   * is ranked last (it stays a fallback); the returned list names each one.
   */
  async measure(probe: (source: ObjectSource) => Promise<unknown>, deadlineMs = Infinity, graceMs = Infinity): Promise<Array<{ name: string; problem: string }>> {
    const problems: Array<{ name: string; problem: string }> = [];
    const pending = new Set(this.mirrors);
    let firstOk: (() => void) | undefined;
    const ok = new Promise<void>((resolve) => (firstOk = resolve));
    const all = Promise.all(
      this.mirrors.map(async (m) => {
        const started = performance.now();
        let timer: ReturnType<typeof setTimeout> | undefined;
        const late = new Promise<'late'>((resolve) => {
          if (Number.isFinite(deadlineMs)) timer = unrefTimer(setTimeout(() => resolve('late'), deadlineMs));
        });
        try {
          const outcome = await Promise.race([probe(m.source).then(() => 'ok' as const), late]);
          if (outcome === 'late') {
            m.failures++;
            m.latencyMs = Number.MAX_SAFE_INTEGER / 8;
            problems.push({ name: m.source.name, problem: `no answer within ${Math.round(deadlineMs / 100) / 10} s (slow)` });
          } else {
            m.latencyMs = performance.now() - started;
            firstOk?.();
          }
        } catch (err) {
          m.failures++;
          m.latencyMs = Number.MAX_SAFE_INTEGER / 4;
          problems.push({ name: m.source.name, problem: `unreachable (${errorMessage(err)})` });
        } finally {
          clearTimeout(timer);
          pending.delete(m);
        }
      }),
    );
    // Rank on the first answers: after one mirror answered, the rest get `graceMs`; a late one is ranked last until it answers.
    await (Number.isFinite(graceMs) ? Promise.race([all, ok.then(() => new Promise<void>((resolve) => unrefTimer(setTimeout(resolve, graceMs))))]) : all);
    for (const m of pending) {
      m.latencyMs = Number.MAX_SAFE_INTEGER / 8;
      problems.push({ name: m.source.name, problem: `no answer within ${graceMs} ms of the fastest source (slow)` });
    }
    return [...problems];
  }

  async get(ref: ObjectRef, options: GetOptions = {}): Promise<VerifiedObject> {
    const problems: string[] = [];
    let allMissing = true;
    let anyUnavailable = false;
    let order = this.ordered(options.priority);
    // The object's owner in the swarm fetches it from the origin for everyone: ask it first and let it hold the request meanwhile.
    const owner = this.ownerOf(ref.id);
    if (owner && owner !== 'self') order.unshift(...order.splice(order.indexOf(owner), 1));
    // With a plan, the other peers are asked once and all at once whether they have it (not one after the other).
    let probed = owner === undefined;
    const demand = (options.priority ?? 'demand') === 'demand';
    for (let i = 0; i < order.length; i++) {
      if (!probed && order[i] !== owner && order[i]!.kind === 'peer') {
        probed = true;
        const rest = order.slice(i);
        order = [...order.slice(0, i), ...(await this.holders(rest.filter((m) => m.kind === 'peer'), ref.id)), ...rest.filter((m) => m.kind !== 'peer')];
        if (i >= order.length) break;
      }
      const mirror = order[i]!;
      const started = performance.now();
      const asked = mirror === owner ? { ...options, waitMs: demand ? this.windowOf(mirror, ref) : PREFETCH_WAIT_MS } : options;
      // Only a demand read (the guest waits) gives a peer a short window; prefetch waits for it.
      const attempt = mirror.kind === 'peer' && demand ? this.windowed(mirror, ref, asked) : undefined;
      try {
        const object = await (attempt ? attempt.get : mirror.source.get(ref, asked));
        const elapsed = object.transferMs ?? performance.now() - started;
        mirror.latencyMs = mirror.latencyMs * 0.8 + elapsed * 0.2;
        mirror.served++;
        mirror.streak = 0;
        return object;
      } catch (caught) {
        if (options.signal?.aborted) throw caught;
        const err = attempt?.late() ? new StoreError('store-unavailable', `no answer within ${attempt.windowMs} ms (slow peer)`) : caught;
        // Genuine bytes, wrong reference: every mirror would answer the same, and none is at fault.
        if (isHostmeError(err, 'object-length-mismatch')) throw err;
        const next = order[i + 1]?.source.name;
        if (isHostmeError(err, 'object-missing')) {
          problems.push(`${mirror.source.name}: missing`);
        } else if (isHostmeError(err, 'object-invalid')) {
          allMissing = false;
          mirror.lying = true;
          mirror.failures++;
          problems.push(`${mirror.source.name}: wrong bytes`);
          if (mirror.kind === 'peer') this.drop(mirror, ref.id, `served wrong bytes for object ${ref.id.slice(0, 16)}…`, true);
          else mirrorDemotedChannel.publish({ mirror: mirror.source.name, id: ref.id, reason: errorMessage(err) });
        } else {
          allMissing = false;
          anyUnavailable = true;
          mirror.failures++;
          // Slow is not dead: a late peer ranks lower, only failing ones are dropped.
          if (!attempt?.late()) mirror.streak++;
          mirror.latencyMs = mirror.latencyMs * 2 + 100;
          problems.push(`${mirror.source.name}: ${errorMessage(err)}`);
          if (mirror.kind === 'peer' && mirror.streak >= PEER_DROP_STREAK) this.drop(mirror, ref.id, `failed ${mirror.streak} times in a row (${errorMessage(err)})`, false);
        }
        if (next) mirrorFailoverChannel.publish({ from: mirror.source.name, to: next, id: ref.id, reason: errorMessage(err) });
      }
    }
    // Every mirror answered, and no copy was genuine: an integrity failure, not an outage.
    const code = allMissing ? 'object-missing' : anyUnavailable ? 'store-unavailable' : 'object-invalid';
    throw new StoreError(code, `object ${ref.id} could not be read from any mirror: ${problems.join('; ')}`, { id: ref.id, problems });
  }

  async has(id: ObjectId): Promise<boolean> {
    for (const mirror of this.ordered()) {
      try {
        if (await mirror.source.has(id)) return true;
      } catch {
        // Unreachable mirrors do not decide presence.
      }
    }
    return false;
  }

  async close(): Promise<void> {
    await Promise.all(this.mirrors.map((m) => m.source.close()));
  }

  /**
   * Demand reads: LAN peers that answer first, then fastest first whatever
   * the kind. Prefetch and background: peers first, so the origin's bandwidth
   * is left to what no peer has.
   */
  private ordered(priority: GetOptions['priority'] = 'demand'): MirrorState[] {
    const tier = (m: MirrorState) => {
      if (m.kind !== 'peer') return 1;
      if (priority !== 'demand') return 0;
      return m.peer?.lan && m.streak === 0 ? 0 : 1;
    };
    return [...this.mirrors].sort((a, b) => Number(a.lying) - Number(b.lying) || tier(a) - tier(b) || a.latencyMs - b.latencyMs);
  }

  /**
   * The peers among `peers` that say they hold `id` (HEAD), asked all at
   * once; one that has not answered within PROBE_MS counts as not holding it.
   */
  private async holders(peers: MirrorState[], id: ObjectId): Promise<MirrorState[]> {
    if (peers.length === 0) return [];
    const answers = await Promise.all(
      peers.map((m) => {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const late = new Promise<boolean>((resolve) => (timer = unrefTimer(setTimeout(() => resolve(false), PROBE_MS))));
        return Promise.race([m.source.has(id).catch(() => false), late]).finally(() => clearTimeout(timer));
      }),
    );
    return peers.filter((_, i) => answers[i]);
  }

  /** A demand read's window for a peer: its configured base plus 1 ms per 4 KiB of the object. */
  private windowOf(mirror: MirrorState, ref: ObjectRef): number {
    return (mirror.peer?.windowMs ?? 750) + Math.ceil(ref.length / 4096);
  }

  /** A peer's read, cut off after its window on demand reads (the guest is waiting). */
  private windowed(mirror: MirrorState, ref: ObjectRef, options: GetOptions): { get: Promise<VerifiedObject>; late(): boolean; windowMs: number } {
    const windowMs = this.windowOf(mirror, ref);
    const controller = new AbortController();
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      controller.abort();
    }, windowMs);
    const signal = options.signal ? AbortSignal.any([options.signal, controller.signal]) : controller.signal;
    const get = mirror.source.get(ref, { ...options, signal }).finally(() => clearTimeout(timer));
    return { get, late: () => late, windowMs };
  }
}
