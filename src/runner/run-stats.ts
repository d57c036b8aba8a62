import { onEvent, type HostmeEventName, type HostmeEvents } from '../store/events.js';

export interface RunStats {
  bytesFetched: number;
  bytesFromCache: number;
  requests: number;
  chunksFetched: number;
  chunksFromCache: number;
  chunksPrefetched: number;
  /** Fetches a guest read had to wait for from the start: the sequential round trips prefetch removes. */
  demandFetches: number;
  msToReady: number | null;
  /** Set when the guest was resumed from a QEMU snapshot: ms from the start of the run to the resumed guest running. */
  msToResume?: number;
  mirrorsUsed: string[];
  /** Stored bytes of objects that came from peers (docs/peers.md), part of bytesFetched. */
  bytesFromPeers: number;
  errors: string[];
  /** Milestones of this run, in ms since hostme's process started (resolved, resume-planned, qemu-started, running, ready): where a start's time goes. */
  phases?: Record<string, number>;
}

/**
 * Collects what the user sees in the progress line, the summary and
 * --stats-json from hostme's diagnostics channels (see docs/run.md).
 */
export class RunStatsCollector {
  readonly stats: RunStats = {
    bytesFetched: 0,
    bytesFromCache: 0,
    requests: 0,
    chunksFetched: 0,
    chunksFromCache: 0,
    chunksPrefetched: 0,
    demandFetches: 0,
    msToReady: null,
    mirrorsUsed: [],
    errors: [],
    bytesFromPeers: 0,
  };
  private readonly started = performance.now();
  private readonly stops: Array<() => void> = [];
  private windowBytes = 0;
  private windowStart = performance.now();
  private lastRate = 0;

  constructor() {
    this.on('hostme:http:request', (m) => {
      this.stats.requests++;
      this.stats.bytesFetched += m.bytes;
      this.windowBytes += m.bytes;
      if (m.error) this.error(`${m.url}: ${m.error}`);
    });
    this.on('hostme:cache:hit', (m) => {
      this.stats.chunksFromCache++;
      this.stats.bytesFromCache += m.bytes;
    });
    this.on('hostme:cache:miss', (m) => {
      this.stats.chunksFetched++;
      if (m.priority === 'demand') this.stats.demandFetches++;
      const source = m.source;
      if (source.startsWith('peer ')) this.stats.bytesFromPeers += m.bytes;
      if (!this.stats.mirrorsUsed.includes(source)) this.stats.mirrorsUsed.push(source);
    });
    this.on('hostme:mirror:demote', (m) => this.error(`mirror ${m.mirror} served wrong bytes for ${m.id.slice(0, 16)} and was demoted`));
    this.on('hostme:mirror:failover', (m) => this.error(`failover from ${m.from} to ${m.to}: ${m.reason}`));
    this.on('hostme:cache:degraded', (m) => this.error(`cache not persisting: ${m.reason}`));
  }

  /** Records a milestone (ms since the process started; the first mark of a name wins). */
  mark(name: string): void {
    const phases = (this.stats.phases ??= {});
    phases[name] ??= Math.round(performance.now());
  }

  error(text: string): void {
    if (this.stats.errors.length < 100 && !this.stats.errors.includes(text)) this.stats.errors.push(text);
  }

  /** Bytes per second over the last second or so. */
  rate(): number {
    const now = performance.now();
    const elapsed = (now - this.windowStart) / 1000;
    if (elapsed >= 1) {
      this.lastRate = this.windowBytes / elapsed;
      this.windowBytes = 0;
      this.windowStart = now;
    }
    return this.lastRate;
  }

  hitRate(): number {
    const total = this.stats.chunksFromCache + this.stats.chunksFetched;
    return total ? this.stats.chunksFromCache / total : 0;
  }

  elapsedMs(): number {
    return performance.now() - this.started;
  }

  close(): void {
    for (const stop of this.stops) stop();
    this.stops.length = 0;
  }

  private on<N extends HostmeEventName>(name: N, handler: (message: HostmeEvents[N]) => void): void {
    this.stops.push(onEvent(name, handler));
  }
}
