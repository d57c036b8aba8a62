import Database from 'better-sqlite3';
import { randomUUID } from 'node:crypto';

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed';

export interface Job {
  id: string;
  state: JobState;
  request: unknown;
  step: string;
  progress: number;
  log: string[];
  outputs: unknown;
  error: string | null;
  attempts: number;
  created: string;
  updated: string;
}

interface JobRow {
  id: string;
  state: JobState;
  request: string;
  step: string;
  progress: number;
  log: string;
  outputs: string;
  error: string | null;
  attempts: number;
  created: string;
  updated: string;
}

const MAX_LOG_LINES = 500;
/** A job interrupted by this many restarts is failed instead of retried. */
export const MAX_ATTEMPTS = 2;

/**
 * Render jobs in an embedded SQLite database (WAL), so a restart loses no job:
 * queued jobs stay queued, and a job that was running when the service died
 * is queued again (or failed after MAX_ATTEMPTS), never left "running".
 */
export class JobStore {
  private readonly db: Database.Database;

  constructor(file: string) {
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(`CREATE TABLE IF NOT EXISTS jobs (
      id TEXT PRIMARY KEY, state TEXT NOT NULL, request TEXT NOT NULL,
      step TEXT NOT NULL DEFAULT '', progress REAL NOT NULL DEFAULT 0,
      log TEXT NOT NULL DEFAULT '[]', outputs TEXT NOT NULL DEFAULT 'null',
      error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
      created TEXT NOT NULL, updated TEXT NOT NULL)`);
  }

  /** After a restart: jobs found "running" were interrupted. */
  recoverInterrupted(): { requeued: number; failed: number } {
    const now = new Date().toISOString();
    const failed = this.db
      .prepare(`UPDATE jobs SET state = 'failed', error = 'interrupted by a service restart ' || attempts || ' times; giving up', updated = ? WHERE state = 'running' AND attempts >= ?`)
      .run(now, MAX_ATTEMPTS).changes;
    const requeued = this.db.prepare(`UPDATE jobs SET state = 'queued', step = 'requeued after a restart', updated = ? WHERE state = 'running'`).run(now).changes;
    return { requeued, failed };
  }

  create(request: unknown): Job {
    const now = new Date().toISOString();
    const id = randomUUID();
    this.db.prepare(`INSERT INTO jobs (id, state, request, created, updated) VALUES (?, 'queued', ?, ?, ?)`).run(id, JSON.stringify(request), now, now);
    return this.get(id)!;
  }

  get(id: string): Job | undefined {
    const row = this.db.prepare(`SELECT * FROM jobs WHERE id = ?`).get(id) as JobRow | undefined;
    return row && toJob(row);
  }

  list(limit = 100): Job[] {
    return (this.db.prepare(`SELECT * FROM jobs ORDER BY created DESC LIMIT ?`).all(limit) as JobRow[]).map(toJob);
  }

  /** Atomically take the oldest queued job and mark it running. */
  claimNext(): Job | undefined {
    const claim = this.db.transaction(() => {
      const row = this.db.prepare(`SELECT * FROM jobs WHERE state = 'queued' ORDER BY created LIMIT 1`).get() as JobRow | undefined;
      if (!row) return undefined;
      this.db.prepare(`UPDATE jobs SET state = 'running', attempts = attempts + 1, error = NULL, updated = ? WHERE id = ?`).run(new Date().toISOString(), row.id);
      return row.id;
    });
    const id = claim();
    return id ? this.get(id) : undefined;
  }

  progress(id: string, step: string, progress: number): void {
    this.db.prepare(`UPDATE jobs SET step = ?, progress = ?, updated = ? WHERE id = ?`).run(step, progress, new Date().toISOString(), id);
  }

  appendLog(id: string, lines: string[]): void {
    const job = this.get(id);
    if (!job) return;
    const log = [...job.log, ...lines].slice(-MAX_LOG_LINES);
    this.db.prepare(`UPDATE jobs SET log = ?, updated = ? WHERE id = ?`).run(JSON.stringify(log), new Date().toISOString(), id);
  }

  queuedCount(): number {
    return (this.db.prepare(`SELECT COUNT(*) AS n FROM jobs WHERE state = 'queued'`).get() as { n: number }).n;
  }

  /** Deletes finished jobs beyond the newest `keep` (their logs and outputs go with them). */
  prune(keep: number): number {
    return this.db
      .prepare(`DELETE FROM jobs WHERE state IN ('succeeded', 'failed') AND id NOT IN (SELECT id FROM jobs WHERE state IN ('succeeded', 'failed') ORDER BY updated DESC LIMIT ?)`)
      .run(keep).changes;
  }

  /** A finished job keeps its log, outputs and error; its request (manifest and files, up to the body limit) is dropped. */
  finish(id: string, result: { state: 'succeeded'; outputs: unknown } | { state: 'failed'; error: string }): void {
    this.db.prepare(`UPDATE jobs SET request = 'null' WHERE id = ?`).run(id);
    const now = new Date().toISOString();
    if (result.state === 'succeeded') {
      this.db.prepare(`UPDATE jobs SET state = 'succeeded', outputs = ?, progress = 1, step = 'done', updated = ? WHERE id = ?`).run(JSON.stringify(result.outputs), now, id);
    } else {
      this.db.prepare(`UPDATE jobs SET state = 'failed', error = ?, updated = ? WHERE id = ?`).run(result.error, now, id);
    }
  }

  close(): void {
    this.db.close();
  }
}

function toJob(row: JobRow): Job {
  return { ...row, request: JSON.parse(row.request), log: JSON.parse(row.log) as string[], outputs: JSON.parse(row.outputs) };
}
