import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import type { ChunkJob, ChunkResult } from './chunk-worker.js';

/** A fixed pool of chunk workers; `run` resolves with each job's result. */
export class ChunkWorkerPool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly queue: Array<{ job: ChunkJob; resolve: (r: ChunkResult) => void; reject: (e: Error) => void }> = [];
  private readonly pending = new Map<Worker, { resolve: (r: ChunkResult) => void; reject: (e: Error) => void }>();

  constructor(size = Math.max(1, availableParallelism())) {
    for (let i = 0; i < size; i++) {
      const worker = new Worker(new URL('./chunk-worker.js', import.meta.url));
      worker.on('message', (result: ChunkResult) => this.finish(worker, result));
      worker.on('error', (err) => this.fail(worker, err));
      this.workers.push(worker);
      this.idle.push(worker);
    }
  }

  get size(): number {
    return this.workers.length;
  }

  run(job: ChunkJob): Promise<ChunkResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ job, resolve, reject });
      this.dispatch();
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  private dispatch(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const worker = this.idle.pop()!;
      const { job, resolve, reject } = this.queue.shift()!;
      this.pending.set(worker, { resolve, reject });
      worker.postMessage(job, [job.data.buffer as ArrayBuffer]);
    }
  }

  private finish(worker: Worker, result: ChunkResult): void {
    const waiter = this.pending.get(worker);
    this.pending.delete(worker);
    this.idle.push(worker);
    waiter?.resolve(result);
    this.dispatch();
  }

  private fail(worker: Worker, err: Error): void {
    this.pending.get(worker)?.reject(err);
    this.pending.delete(worker);
  }
}
