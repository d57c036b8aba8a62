import { HostmeError, errorMessage } from '../errors.js';
import { dialable, normalizeIp, type LocalNet } from './address.js';
import { IMAGE_KEY } from './tracker.js';

export interface TrackedPeer {
  address: string;
  port: number;
  lan: boolean;
}

const MAX_ANSWER_BYTES = 64 * 1024;
const TIMEOUT_MS = 5000;

/**
 * Talks to a hub's tracker (docs/peers.md "Tracker API"): announce what this
 * machine shares, ask who shares an image, report a peer that lied. Answers
 * are bounded and every returned address is checked before anyone dials it.
 */
export class TrackerClient {
  readonly hub: URL;
  private token?: string;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  /** Our own address as the tracker saw it (to leave ourselves out of answers). */
  seenAs?: string;

  constructor(hub: string, private readonly log?: (line: string) => void) {
    let url: URL;
    try {
      url = new URL(hub);
    } catch {
      throw new HostmeError('usage', `--hub ${hub}: not a URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new HostmeError('usage', `--hub ${hub}: must be http(s)://`);
    this.hub = new URL('/', url);
  }

  /** Peers sharing NAME@VERSION that this machine may dial, LAN first; [] when the tracker cannot help. */
  async peers(image: string, options: { self?: { port: number }; nets?: LocalNet[] } = {}): Promise<TrackedPeer[]> {
    if (!IMAGE_KEY.test(image)) return [];
    const answer = await this.call('GET', `api/peers?image=${encodeURIComponent(image)}`).catch((err: unknown) => {
      this.log?.(`tracker ${this.hub.origin}: ${errorMessage(err)}; no peers`);
      return undefined;
    });
    const list = Array.isArray(answer?.peers) ? (answer.peers as unknown[]).slice(0, 64) : [];
    const seen = new Set<string>();
    const peers: TrackedPeer[] = [];
    for (const raw of list) {
      if (typeof raw !== 'object' || raw === null) continue;
      const { address, port, lan } = raw as Record<string, unknown>;
      if (typeof address !== 'string' || typeof port !== 'number') continue;
      const ip = normalizeIp(address);
      if (!ip || !dialable(ip, port, options.nets)) continue;
      if (options.self && port === options.self.port && (ip === this.seenAs || ip.startsWith('127.'))) continue;
      const key = `${ip}|${port}`;
      if (seen.has(key)) continue;
      seen.add(key);
      peers.push({ address: ip, port, lan: lan === true });
    }
    return peers;
  }

  /** Announces now and then every interval the tracker asks for, until stop(). */
  async share(port: number, images: () => string[]): Promise<void> {
    const once = async () => {
      const answer = await this.call('POST', 'api/peers/announce', { port, images: images(), ...(this.token ? { token: this.token } : {}) });
      if (typeof answer.token === 'string') this.token = answer.token;
      if (typeof answer.address === 'string') this.seenAs = normalizeIp(answer.address);
      const interval = typeof answer.interval === 'number' ? answer.interval : 30;
      return Math.min(300, Math.max(1, interval)) * 1000;
    };
    const next = (ms: number) => {
      if (this.stopped) return;
      this.timer = setTimeout(() => {
        once().then(next, (err: unknown) => {
          this.log?.(`tracker ${this.hub.origin}: announce failed (${errorMessage(err)}); retrying`);
          next(5000);
        });
      }, ms);
      this.timer.unref();
    };
    try {
      next(await once());
    } catch (err) {
      next(5000);
      throw err;
    }
  }

  async report(peer: { address: string; port: number }, reason: string): Promise<void> {
    await this.call('POST', 'api/peers/report', { address: peer.address, port: peer.port, reason: reason.slice(0, 200) }).catch(() => {});
  }

  /** Stops announcing and tells the tracker we left (best effort). */
  async stop(port?: number): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (port !== undefined && this.token) await this.call('POST', 'api/peers/announce', { port, images: [], token: this.token }).catch(() => {});
  }

  private async call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<Record<string, unknown>> {
    const response = await fetch(new URL(path, this.hub), {
      method,
      redirect: 'error',
      signal: AbortSignal.timeout(TIMEOUT_MS),
      ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
    });
    const text = await readBounded(response);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new HostmeError('tracker-error', `HTTP ${response.status}: not JSON`);
    }
    if (!response.ok) throw new HostmeError('tracker-error', `HTTP ${response.status}: ${String((value as Record<string, unknown>)?.message ?? '').slice(0, 200)}`);
    if (typeof value !== 'object' || value === null) throw new HostmeError('tracker-error', 'answer is not a JSON object');
    return value as Record<string, unknown>;
  }
}

async function readBounded(response: Response): Promise<string> {
  const parts: Uint8Array[] = [];
  let size = 0;
  for await (const part of (response.body ?? []) as unknown as AsyncIterable<Uint8Array>) {
    size += part.length;
    if (size > MAX_ANSWER_BYTES) throw new HostmeError('tracker-error', `answer larger than ${MAX_ANSWER_BYTES} bytes`);
    parts.push(part);
  }
  return Buffer.concat(parts).toString('utf8');
}
