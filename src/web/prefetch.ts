// Background prefetch of the boot working set in the browser: the manifest's
// `prefetch` list ([diskIndex, chunk] pairs in boot order, recorded by
// `hostme profile`) is fetched after the disk is set up, at most
// `concurrency` chunks at a time, in list order.
//
// Demand reads always go first: they never enter this queue (v86's reads call
// the reader directly), prefetch requests carry the 'low' fetch priority so
// the browser's per-host connection queue (6 over HTTP/1.1 in Chromium)
// serves waiting demand requests before them, and prefetch never holds more
// than `concurrency` (4) of those connections. A demand read of a chunk that
// is being prefetched joins that fetch instead of starting a second one.
// Errors are silent here (the guest's own read of the chunk reports them);
// stop() ends it (the Stop button). Browser-only.

export interface PrefetchStats {
  /** Chunks in the list for this disk (after de-duplication and the memory cap). */
  planned: number;
  /** Loaded ahead of the guest (over the network or from the browser cache). */
  fetched: number;
  /** Already in memory (the guest got there first) or holes (nothing to fetch). */
  skipped: number;
  /** Failed; the guest's read of the chunk retries and reports. */
  failed: number;
  /** Still working: false when done or stopped. */
  running: boolean;
}

/** What prefetch drives: V86ChunkDisk. */
export interface PrefetchTarget {
  prefetch(chunk: number): Promise<'fetched' | 'present' | 'hole'>;
}

/** The chunks of disk `diskIndex` from a manifest prefetch list, first occurrence order, at most `limit`. */
export function prefetchChunks(list: ReadonlyArray<readonly [number, number]> | undefined, diskIndex: number, limit: number): number[] {
  const seen = new Set<number>();
  for (const [disk, chunk] of list ?? []) {
    if (seen.size >= limit) break;
    if (disk === diskIndex) seen.add(chunk);
  }
  return [...seen];
}

export class Prefetcher {
  readonly stats: PrefetchStats;
  private next = 0;
  private stopped = false;

  constructor(
    private readonly target: PrefetchTarget,
    private readonly chunks: readonly number[],
    private readonly onProgress: (stats: PrefetchStats) => void = () => {},
    private readonly concurrency = 4,
  ) {
    this.stats = { planned: chunks.length, fetched: 0, skipped: 0, failed: 0, running: false };
  }

  /** Runs the list; resolves when every chunk was tried or stop() was called. Never rejects. */
  async run(): Promise<PrefetchStats> {
    this.stats.running = this.chunks.length > 0 && !this.stopped;
    this.report();
    const workers = Array.from({ length: Math.min(this.concurrency, this.chunks.length) }, () => this.worker());
    await Promise.all(workers);
    this.stats.running = false;
    this.report();
    return { ...this.stats };
  }

  /** No new prefetch starts after this (requests already sent complete and are kept). */
  stop(): void {
    this.stopped = true;
  }

  private async worker(): Promise<void> {
    while (!this.stopped && this.next < this.chunks.length) {
      const chunk = this.chunks[this.next++]!;
      try {
        const outcome = await this.target.prefetch(chunk);
        if (outcome === 'fetched') this.stats.fetched++;
        else this.stats.skipped++;
      } catch {
        this.stats.failed++;
      }
      this.report();
    }
  }

  private report(): void {
    this.onProgress({ ...this.stats });
  }
}
