import type { IncomingMessage, ServerResponse } from 'node:http';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { createHash, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { HostmeError, errorMessage, isHostmeError } from '../errors.js';
import { unmountUnder } from '../build/debootstrap.js';
import { JobStore, type Job } from './job-store.js';
import { checkOutputAllowed, renderPolicy, type RenderPolicy } from './policy.js';

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
  /** What the operator allows (outputs, mirrors, fetches, limits). */
  policy: RenderPolicy;
  /** Aborted when the job passes its time limit or the service shuts down: the build must stop and clean up. */
  signal: AbortSignal;
  step(name: string, done: number, total: number): void;
  log(line: string): void;
}

/** Runs one build; returns what the job reports as its outputs. */
export type RenderBuild = (context: RenderContext) => Promise<unknown>;

export interface RenderServiceOptions {
  stateDir: string;
  /** Bearer token for POST and for reading jobs; without one the service accepts nothing. */
  token?: string;
  concurrency?: number;
  build: RenderBuild;
  maxRequestBytes?: number;
  /** The operator's allow-lists and limits (default: no outputs, no mirrors, default limits). */
  policy?: RenderPolicy;
}

/** How long close() waits for a stopped build to clean up before giving up on it. */
const STOP_GRACE_MS = 5000;

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
  private readonly running_ = new Map<string, AbortController>();
  private readonly submits: number[] = [];
  readonly policy: RenderPolicy;

  constructor(private readonly options: RenderServiceOptions) {
    this.jobs = new JobStore(join(options.stateDir, 'render.sqlite'));
    this.policy = options.policy ?? renderPolicy();
  }

  /** Recover jobs interrupted by a restart, remove work left by a crash, then start working the queue. */
  async start(): Promise<{ requeued: number; failed: number }> {
    const recovered = this.jobs.recoverInterrupted();
    const jobsDir = join(this.options.stateDir, 'jobs');
    await unmountUnder(jobsDir).catch(() => {});
    await rm(jobsDir, { recursive: true, force: true });
    this.pump();
    return recovered;
  }

  /** Stops: running builds are aborted (killed, their work removed) and failed; queued jobs stay queued. */
  async close(): Promise<void> {
    this.closed = true;
    for (const controller of this.running_.values()) {
      controller.abort(new HostmeError('render-stopped', 'the render service shut down while this build ran; submit it again'));
    }
    await Promise.allSettled([...this.active]);
    this.jobs.close();
  }

  get(id: string): Job | undefined {
    return this.jobs.get(id);
  }

  submit(request: RenderRequest): Job {
    for (const output of request.outputs) checkOutputAllowed(output.to, this.policy);
    const job = this.jobs.create(request);
    this.pump();
    return job;
  }

  /** Handles /api/builds…; returns false for other paths. Everything here needs the token: job logs name server paths. */
  async handle(req: IncomingMessage, res: ServerResponse, segments: string[]): Promise<boolean> {
    if (segments[0] !== 'api' || segments[1] !== 'builds' || segments.length > 3) return false;
    const id = segments[2];
    const isRead = req.method === 'GET' || req.method === 'HEAD';
    if (!isRead && req.method !== 'POST') return send(res, 405, { error: { code: 'method-not-allowed', message: `${req.method} is not supported here` } }), true;
    if (!this.authorized(req, res)) return true;
    if (req.method === 'POST' && id === undefined) {
      await this.handleSubmit(req, res);
    } else if (isRead && id === undefined) {
      send(res, 200, { builds: this.jobs.list().map(summary) });
    } else if (isRead && id) {
      const job = this.jobs.get(id);
      if (job) send(res, 200, describe(job));
      else send(res, 404, { error: { code: 'build-not-found', message: `no build ${id}` } });
    } else {
      send(res, 405, { error: { code: 'method-not-allowed', message: `${req.method} is not supported here` } });
    }
    return true;
  }

  private authorized(req: IncomingMessage, res: ServerResponse): boolean {
    const refuse = (status: number, code: string, message: string, headers: Record<string, string> = {}): false => {
      // A refused POST's body is not read: close the connection instead of draining it.
      send(res, status, { error: { code, message } }, req.method === 'POST' ? { ...headers, Connection: 'close' } : headers);
      return false;
    };
    if (!this.options.token) return refuse(403, 'read-only', 'this render service accepts no builds: start it with a token (hostme serve --render --token T)');
    const auth = req.headers.authorization ?? '';
    if (!auth.startsWith('Bearer ')) return refuse(401, 'unauthorized', 'send Authorization: Bearer <token>', { 'WWW-Authenticate': 'Bearer' });
    if (!constantTimeEqual(auth.slice(7), this.options.token)) return refuse(403, 'forbidden', 'wrong token');
    return true;
  }

  /** Sliding one-minute window of accepted submissions (there is one token, so this is per token). */
  private rateLimited(): number | undefined {
    const now = Date.now();
    while (this.submits.length && this.submits[0]! <= now - 60_000) this.submits.shift();
    if (this.submits.length < this.policy.limits.submitsPerMinute) return undefined;
    return Math.ceil((this.submits[0]! + 60_000 - now) / 1000);
  }

  private async handleSubmit(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const retryAfter = this.rateLimited();
    if (retryAfter !== undefined) {
      return send(res, 429, { error: { code: 'rate-limited', message: `at most ${this.policy.limits.submitsPerMinute} builds per minute; retry in ${retryAfter} s` } }, { 'Retry-After': String(retryAfter), Connection: 'close' });
    }
    if (this.jobs.queuedCount() >= this.policy.limits.maxQueued) {
      return send(res, 503, { error: { code: 'queue-full', message: `${this.policy.limits.maxQueued} builds are already waiting; retry later` } }, { 'Retry-After': '60', Connection: 'close' });
    }
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
    let job: Job;
    try {
      job = this.submit(parsed.data);
    } catch (err) {
      if (!isHostmeError(err)) throw err;
      return send(res, 400, { error: { code: err.code, message: err.message } });
    }
    this.submits.push(Date.now());
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
    const controller = new AbortController();
    this.running_.set(job.id, controller);
    const limit = this.policy.limits.maxJobSeconds;
    const timer = setTimeout(() => controller.abort(new HostmeError('render-limit-exceeded', `the build ran longer than the ${limit}-second limit and was stopped (not retried)`)), limit * 1000);
    timer.unref();
    let lastWrite = 0;
    let ended = false; // late messages from a stopped build must not touch the job (or a closed database)
    const context: RenderContext = {
      jobId: job.id,
      workDir,
      manifestPath: join(workDir, 'src', 'hostme.json'),
      inputs: request.inputs,
      outputs: request.outputs,
      policy: this.policy,
      signal: controller.signal,
      step: (name, done, total) => {
        const now = performance.now();
        if (ended || (now - lastWrite < 200 && done < total)) return; // keep database writes bounded
        lastWrite = now;
        this.jobs.progress(job.id, name, total > 0 ? done / total : 0);
      },
      log: (line) => {
        if (!ended) this.jobs.appendLog(job.id, [line]);
      },
    };
    let result: { state: 'succeeded'; outputs: unknown } | { state: 'failed'; error: string };
    try {
      await rm(workDir, { recursive: true, force: true });
      await writeSources(join(workDir, 'src'), request);
      for (const output of request.outputs) checkOutputAllowed(output.to, this.policy); // the policy may have changed since it was queued
      result = { state: 'succeeded', outputs: await abortable(this.options.build(context), controller.signal) };
    } catch (err) {
      result = { state: 'failed', error: isHostmeError(err) ? `${err.code}: ${err.message}` : errorMessage(err) };
    }
    ended = true;
    clearTimeout(timer);
    this.running_.delete(job.id);
    // The work goes before the job is reported finished: a finished job has left nothing behind.
    await unmountUnder(workDir).catch(() => {});
    await rm(workDir, { recursive: true, force: true }).catch(() => {});
    if (result.state === 'failed') this.jobs.appendLog(job.id, [`error: ${result.error}`]);
    this.jobs.finish(job.id, result);
    this.jobs.prune(this.policy.limits.keepFinished);
  }
}

/**
 * The build's promise, or the abort reason once the signal fires and the
 * build has had STOP_GRACE_MS to stop: a build that ignores its signal does
 * not hold the job (or a shutdown) forever.
 */
function abortable<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      const grace = setTimeout(() => reject(signal.reason), STOP_GRACE_MS);
      work.then(
        () => reject(signal.reason),
        () => reject(signal.reason),
      ).finally(() => clearTimeout(grace));
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    work.then((value) => !signal.aborted && resolve(value), (err: unknown) => !signal.aborted && reject(err));
  });
}

async function writeSources(dir: string, request: RenderRequest): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'hostme.json'), JSON.stringify(request.manifest, null, 2));
  for (const [path, base64] of Object.entries(request.files)) {
    const target = resolve(dir, path);
    if (!target.startsWith(dir + sep)) throw new HostmeError('bad-request', `file path ${path} escapes the build directory`);
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
