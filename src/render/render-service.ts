import type { IncomingMessage, ServerResponse } from 'node:http';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { createHash, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { errorMessage } from '../errors.js';
import { JobStore, type Job } from './job-store.js';

export const renderRequestSchema = z.object({
  /** The build manifest (docs/build.md), as JSON. */
  manifest: z.record(z.string(), z.unknown()),
  /** Files the manifest refers to, by path relative to it, base64-encoded. */
  files: z.record(z.string(), z.string()).default({}),
  inputs: z.record(z.string(), z.unknown()).default({}),
  outputs: z.array(z.object({ format: z.string(), to: z.string() })).default([]),
});
export type RenderRequest = z.infer<typeof renderRequestSchema>;

export interface RenderContext {
  jobId: string;
  workDir: string;
  manifestPath: string;
  inputs: Record<string, unknown>;
  outputs: RenderRequest['outputs'];
  step(name: string, done: number, total: number): void;
  log(line: string): void;
}

/** Runs one build; returns what the job reports as its outputs. */
export type RenderBuild = (context: RenderContext) => Promise<unknown>;

export interface RenderServiceOptions {
  stateDir: string;
  /** Bearer token for POST; without one the service only lists jobs. */
  token?: string;
  concurrency?: number;
  build: RenderBuild;
  maxRequestBytes?: number;
}

/**
 * The render service behind `hostme serve --render`: a job queue with bounded
 * concurrency whose state lives in SQLite, and its REST API:
 *   POST /api/builds        {manifest, files, inputs, outputs} → 202 {id, …}
 *   GET  /api/builds        list
 *   GET  /api/builds/:id    state, step, progress, log, outputs, error
 */
export class RenderService {
  private readonly jobs: JobStore;
  private running = 0;
  private closed = false;
  private readonly active = new Set<Promise<void>>();

  constructor(private readonly options: RenderServiceOptions) {
    this.jobs = new JobStore(join(options.stateDir, 'render.sqlite'));
  }

  /** Recover jobs interrupted by a restart, then start working the queue. */
  start(): { requeued: number; failed: number } {
    const recovered = this.jobs.recoverInterrupted();
    this.pump();
    return recovered;
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.active]);
    this.jobs.close();
  }

  get(id: string): Job | undefined {
    return this.jobs.get(id);
  }

  submit(request: RenderRequest): Job {
    const job = this.jobs.create(request);
    this.pump();
    return job;
  }

  /** Handles /api/builds…; returns false for other paths. */
  async handle(req: IncomingMessage, res: ServerResponse, segments: string[]): Promise<boolean> {
    if (segments[0] !== 'api' || segments[1] !== 'builds' || segments.length > 3) return false;
    const id = segments[2];
    if (req.method === 'POST' && id === undefined) {
      await this.handleSubmit(req, res);
    } else if ((req.method === 'GET' || req.method === 'HEAD') && id === undefined) {
      send(res, 200, { builds: this.jobs.list().map(summary) });
    } else if ((req.method === 'GET' || req.method === 'HEAD') && id) {
      const job = this.jobs.get(id);
      if (job) send(res, 200, describe(job));
      else send(res, 404, { error: { code: 'build-not-found', message: `no build ${id}` } });
    } else {
      send(res, 405, { error: { code: 'method-not-allowed', message: `${req.method} is not supported here` } });
    }
    return true;
  }

  private async handleSubmit(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!this.options.token) return send(res, 403, { error: { code: 'read-only', message: 'this render service accepts no builds: start it with a token (hostme serve --render --token T)' } });
    const auth = req.headers.authorization ?? '';
    if (!auth.startsWith('Bearer ')) return send(res, 401, { error: { code: 'unauthorized', message: 'send Authorization: Bearer <token>' } }, { 'WWW-Authenticate': 'Bearer' });
    if (!constantTimeEqual(auth.slice(7), this.options.token)) return send(res, 403, { error: { code: 'forbidden', message: 'wrong token' } });
    let body: unknown;
    try {
      body = JSON.parse(await readBody(req, this.options.maxRequestBytes ?? 64 * 1024 * 1024));
    } catch (err) {
      return send(res, 400, { error: { code: 'bad-request', message: `request body is not JSON: ${errorMessage(err)}` } });
    }
    const parsed = renderRequestSchema.safeParse(body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      return send(res, 400, { error: { code: 'bad-request', message: `${issue.path.join('.') || '(body)'}: ${issue.message}` } });
    }
    const unsafe = Object.keys(parsed.data.files).find((path) => !isSafeRelative(path));
    if (unsafe) return send(res, 400, { error: { code: 'bad-request', message: `files: "${unsafe}" must be a relative path inside the build` } });
    const job = this.submit(parsed.data);
    send(res, 202, describe(job), { Location: `/api/builds/${job.id}` });
  }

  private pump(): void {
    while (!this.closed && this.running < (this.options.concurrency ?? 1)) {
      const job = this.jobs.claimNext();
      if (!job) return;
      this.running++;
      const work = this.run(job).finally(() => {
        this.running--;
        this.active.delete(work);
        this.pump();
      });
      this.active.add(work);
    }
  }

  private async run(job: Job): Promise<void> {
    const request = job.request as RenderRequest;
    const workDir = join(this.options.stateDir, 'jobs', job.id);
    let lastWrite = 0;
    const context: RenderContext = {
      jobId: job.id,
      workDir,
      manifestPath: join(workDir, 'src', 'hostme.json'),
      inputs: request.inputs,
      outputs: request.outputs,
      step: (name, done, total) => {
        const now = performance.now();
        if (now - lastWrite < 200 && done < total) return; // keep database writes bounded
        lastWrite = now;
        this.jobs.progress(job.id, name, total > 0 ? done / total : 0);
      },
      log: (line) => this.jobs.appendLog(job.id, [line]),
    };
    try {
      await rm(workDir, { recursive: true, force: true });
      await writeSources(join(workDir, 'src'), request);
      const outputs = await this.options.build(context);
      this.jobs.finish(job.id, { state: 'succeeded', outputs });
    } catch (err) {
      this.jobs.appendLog(job.id, [`error: ${errorMessage(err)}`]);
      this.jobs.finish(job.id, { state: 'failed', error: errorMessage(err) });
    } finally {
      await rm(workDir, { recursive: true, force: true }).catch(() => {});
    }
  }
}

async function writeSources(dir: string, request: RenderRequest): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'hostme.json'), JSON.stringify(request.manifest, null, 2));
  for (const [path, base64] of Object.entries(request.files)) {
    const target = resolve(dir, path);
    if (!target.startsWith(dir + sep)) throw new Error(`file path ${path} escapes the build directory`);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, Buffer.from(base64, 'base64'));
  }
}

function isSafeRelative(path: string): boolean {
  return path.length > 0 && !path.startsWith('/') && !path.includes('\\') && !path.includes('\0') && path.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..');
}

function summary(job: Job): Record<string, unknown> {
  return { id: job.id, state: job.state, step: job.step, progress: job.progress, created: job.created, updated: job.updated, error: job.error };
}

function describe(job: Job): Record<string, unknown> {
  return { ...summary(job), attempts: job.attempts, log: job.log, outputs: job.outputs };
}

function send(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = JSON.stringify(value, null, 2) + '\n';
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store', ...headers });
  res.end(body);
}

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolveBody, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    req.on('data', (part: Buffer) => {
      size += part.length;
      if (size > limit) {
        reject(new Error(`body larger than ${limit} bytes`));
        req.destroy();
      } else {
        parts.push(part);
      }
    });
    req.on('end', () => resolveBody(Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}

function constantTimeEqual(a: string, b: string): boolean {
  // Compare digests so neither the content nor the length leaks through timing.
  const digest = (text: string) => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(a), digest(b));
}
