// The browser prefetch queue's logic under Node (it needs no DOM): order,
// bounded concurrency, silent errors, stop, and the manifest list filter.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Prefetcher, prefetchChunks, type PrefetchStats, type PrefetchTarget } from './prefetch.js';

/** A target whose prefetches finish when the test says so. */
class ControlledTarget implements PrefetchTarget {
  readonly started: number[] = [];
  inFlight = 0;
  maxInFlight = 0;
  private readonly pending = new Map<number, { resolve: (v: 'fetched' | 'present' | 'hole') => void; reject: (e: Error) => void }>();

  prefetch(chunk: number): Promise<'fetched' | 'present' | 'hole'> {
    this.started.push(chunk);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    return new Promise((resolve, reject) => this.pending.set(chunk, { resolve, reject })).finally(() => this.inFlight--) as Promise<'fetched' | 'present' | 'hole'>;
  }

  finish(chunk: number, outcome: 'fetched' | 'present' | 'hole' | Error): void {
    const p = this.pending.get(chunk)!;
    this.pending.delete(chunk);
    if (outcome instanceof Error) p.reject(outcome);
    else p.resolve(outcome);
  }

  get waiting(): number[] {
    return [...this.pending.keys()];
  }
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('prefetchChunks: one disk, first occurrence order, capped', () => {
  const list: Array<[number, number]> = [[0, 5], [1, 0], [0, 2], [0, 5], [0, 9], [0, 1]];
  assert.deepEqual(prefetchChunks(list, 0, 100), [5, 2, 9, 1]);
  assert.deepEqual(prefetchChunks(list, 0, 2), [5, 2]);
  assert.deepEqual(prefetchChunks(list, 1, 100), [0]);
  assert.deepEqual(prefetchChunks(undefined, 0, 100), []);
});

test('Prefetcher: list order, at most 4 at once, errors counted and skipped', async () => {
  const target = new ControlledTarget();
  const progress: PrefetchStats[] = [];
  const chunks = [7, 3, 9, 1, 4, 8];
  const prefetcher = new Prefetcher(target, chunks, (s) => progress.push(s));
  const done = prefetcher.run();
  await tick();
  assert.deepEqual(target.started, [7, 3, 9, 1], 'four start, in list order');
  target.finish(3, new Error('network down'));
  await tick();
  assert.deepEqual(target.started, [7, 3, 9, 1, 4], 'a failure frees its slot for the next chunk');
  target.finish(7, 'fetched');
  target.finish(9, 'present');
  target.finish(1, 'hole');
  await tick();
  target.finish(4, 'fetched');
  await tick();
  target.finish(8, 'fetched');
  const stats = await done;
  assert.equal(target.maxInFlight, 4);
  assert.deepEqual(stats, { planned: 6, fetched: 3, skipped: 2, failed: 1, running: false });
  assert.equal(progress[0]!.running, true);
  assert.deepEqual(progress.at(-1), stats);
});

test('Prefetcher: stop() starts nothing new; requests in flight complete', async () => {
  const target = new ControlledTarget();
  const prefetcher = new Prefetcher(target, [1, 2, 3, 4, 5, 6, 7], undefined, 2);
  const done = prefetcher.run();
  await tick();
  assert.deepEqual(target.started, [1, 2]);
  prefetcher.stop();
  target.finish(1, 'fetched');
  target.finish(2, 'fetched');
  const stats = await done;
  assert.deepEqual(target.started, [1, 2]);
  assert.deepEqual(stats, { planned: 7, fetched: 2, skipped: 0, failed: 0, running: false });
});

test('Prefetcher: an empty list finishes at once', async () => {
  const stats = await new Prefetcher(new ControlledTarget(), []).run();
  assert.deepEqual(stats, { planned: 0, fetched: 0, skipped: 0, failed: 0, running: false });
});
