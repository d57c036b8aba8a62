import { eventChannel as channel } from './events.js';
import { assertRepoPath, type ReadOptions, type RepoTransport } from './transport.js';
import { StoreError } from './errors.js';
import { Semaphore } from './semaphore.js';
import { errorMessage } from '../errors.js';

export interface HttpTransportOptions {
  /** Requests in flight at once to this server. */
  concurrency?: number;
  /** Per-attempt timeout. */
  timeoutMs?: number;
  /** Extra attempts after a network error, timeout or 5xx. */
  retries?: number;
  /** First backoff delay; doubles per attempt, with jitter. */
  backoffMs?: number;
  /** Bearer token for PUT (publishing). */
  token?: string;
  /** The fetch to use (default: the platform's; a page may pass a wrapped one). */
  fetch?: typeof fetch;
  /** Added to every request (a page sends `credentials: 'omit'`: repositories are public). */
  requestInit?: RequestInit;
}

/** Published for every completed HTTP request (payload: store/events.ts HostmeEvents). */
export const httpRequestChannel = channel('hostme:http:request');

const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;

/**
 * A repository served over HTTP(S) by any static server. Uses the platform
 * fetch (undici: keep-alive connection pool), bounds parallelism, retries
 * network errors and 5xx with exponential backoff, and never relies on Range.
 */
export class HttpTransport implements RepoTransport {
  readonly location: string;
  private readonly base: URL;
  private readonly limiter: Semaphore;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly backoffMs: number;
  private readonly token?: string;
  private readonly fetch: typeof fetch;
  private readonly init: RequestInit;

  constructor(baseUrl: string, options: HttpTransportOptions = {}) {
    this.base = new URL(baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`);
    this.location = this.base.href.replace(/\/$/, '');
    this.limiter = new Semaphore(options.concurrency ?? 8);
    this.timeoutMs = options.timeoutMs ?? 15_000;
    this.retries = options.retries ?? 3;
    this.backoffMs = options.backoffMs ?? 150;
    this.token = options.token;
    this.fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.init = options.requestInit ?? {};
  }

  urlOf(path: string): string {
    assertRepoPath(path);
    return new URL(path, this.base).href;
  }

  async read(path: string, options: ReadOptions = {}): Promise<Uint8Array | null> {
    const url = this.urlOf(path);
    const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    return this.withRetries<Uint8Array | null>(url, 'GET', options.signal, async (signal) => {
      const init: RequestInit = { ...this.init, signal, headers: { 'accept-encoding': 'identity' } };
      if (options.lowPriority) (init as { priority?: string }).priority = 'low';
      if (options.revalidate) init.cache = 'no-cache';
      const response = await this.fetch(url, init);
      if (response.status === 404 || response.status === 410) {
        await response.body?.cancel();
        return { value: null, status: response.status, bytes: 0 };
      }
      if (!response.ok) {
        await response.body?.cancel();
        return { retryable: response.status >= 500 || response.status === 429, status: response.status, error: `HTTP ${response.status} ${response.statusText}` };
      }
      const body = await readBody(response, maxBytes, url);
      return { value: body, status: response.status, bytes: body.length };
    });
  }

  async exists(path: string): Promise<boolean> {
    const url = this.urlOf(path);
    const found = await this.withRetries(url, 'HEAD', undefined, async (signal) => {
      const response = await this.fetch(url, { ...this.init, method: 'HEAD', signal });
      if (response.status === 404) return { value: false, status: 404, bytes: 0 };
      if (!response.ok) return { retryable: response.status >= 500, status: response.status, error: `HTTP ${response.status}` };
      return { value: true, status: response.status, bytes: 0 };
    });
    return found === true;
  }

  async write(path: string, data: Uint8Array): Promise<void> {
    const url = this.urlOf(path);
    await this.withRetries(url, 'PUT', undefined, async (signal) => {
      const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
      if (this.token) headers.authorization = `Bearer ${this.token}`;
      const response = await this.fetch(url, { ...this.init, method: 'PUT', body: data as unknown as BodyInit, headers, signal });
      const text = await response.text().catch(() => '');
      if (response.ok) return { value: undefined, status: response.status, bytes: data.length };
      if (response.status >= 500) return { retryable: true, status: response.status, error: `HTTP ${response.status} ${text.slice(0, 200)}` };
      throw new StoreError('store-refused', `${url}: server refused the upload: HTTP ${response.status} ${text.trim().slice(0, 200)}`, { url, status: response.status });
    });
  }

  private async withRetries<T>(
    url: string,
    method: string,
    outerSignal: AbortSignal | undefined,
    attempt: (signal: AbortSignal) => Promise<{ value: T; status: number; bytes: number } | { retryable: boolean; status: number; error: string }>,
  ): Promise<T> {
    let lastError = '';
    for (let n = 0; n <= this.retries; n++) {
      if (n > 0) await sleep(this.backoffMs * 2 ** (n - 1) * (0.5 + Math.random()), outerSignal);
      const started = performance.now();
      const release = await this.limiter.acquire();
      const timeout = AbortSignal.timeout(this.timeoutMs);
      const signal = outerSignal ? AbortSignal.any([outerSignal, timeout]) : timeout;
      try {
        const result = await attempt(signal);
        const ms = performance.now() - started;
        httpRequestChannel.publish({ url, method, status: result.status, bytes: 'bytes' in result ? result.bytes : 0, ms, attempt: n });
        if ('value' in result) return result.value;
        lastError = result.error;
        if (!result.retryable) break;
      } catch (err) {
        if (err instanceof StoreError) throw err;
        if (outerSignal?.aborted) throw err;
        const permanent = permanentNetworkError(err);
        if (permanent) throw new StoreError('store-bad-redirect', `${url}: ${permanent} (not retried)`, { url, method });
        lastError = timeout.aborted ? `no answer within ${this.timeoutMs} ms` : describeNetworkError(err);
        httpRequestChannel.publish({ url, method, status: 0, bytes: 0, ms: performance.now() - started, attempt: n, error: lastError });
      } finally {
        release();
      }
    }
    throw new StoreError('store-unavailable', `${url}: ${lastError} (after ${this.retries + 1} attempts)`, { url, method });
  }
}

async function readBody(response: Response, maxBytes: number, url: string): Promise<Uint8Array> {
  const declared = Number(response.headers.get('content-length') ?? NaN);
  if (declared > maxBytes) {
    await response.body?.cancel();
    throw new StoreError('object-invalid', `${url}: ${declared} bytes declared, more than the ${maxBytes} allowed`, { url });
  }
  const parts: Uint8Array[] = [];
  let total = 0;
  for await (const part of response.body as unknown as AsyncIterable<Uint8Array>) {
    total += part.length;
    if (total > maxBytes) throw new StoreError('object-invalid', `${url}: body exceeds ${maxBytes} bytes`, { url });
    parts.push(part);
  }
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Failures no retry can fix, named: undici reports them all as "fetch failed". */
function permanentNetworkError(err: unknown): string | undefined {
  const cause = errorMessage((err as { cause?: unknown }).cause ?? '');
  if (/redirect count exceeded/i.test(cause)) return 'the server redirects in a loop (more than 20 redirects)';
  if (/scheme must be a? ?HTTP/i.test(cause) || /not implemented/i.test(cause)) return 'the server redirects to a URL that is not http(s) (only http and https redirects are followed)';
  return undefined;
}

function describeNetworkError(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  if (cause?.code) return `${cause.code} ${cause.message ?? ''}`.trim();
  return errorMessage(err);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}
