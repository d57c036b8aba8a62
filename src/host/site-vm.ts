import { request } from 'node:http';
import { errorMessage } from '../errors.js';
import { startImage, type RunningImage } from '../runner/run-image.js';
import type { SiteEntry } from './site-store.js';
import { freeLoopbackPort } from './ports.js';

export type SiteState = 'stopped' | 'starting' | 'running' | 'backoff' | 'failed';

export interface SiteVmStatus {
  name: string;
  state: SiteState;
  /** http://127.0.0.1:PORT where the VM's server is published. */
  address?: string;
  /** Milliseconds since the VM started serving. */
  uptimeMs: number;
  restarts: number;
  /** Requests this node answered for the site (since the node started). */
  requests: number;
  /** Bytes the current run fetched over the network / read from the local cache. */
  bytesFetched: number;
  bytesFromCache: number;
  memoryMiB?: number;
  /** The VM has a display the dashboard can show (hostme host --vga). */
  screen: boolean;
  error?: string;
}

const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 60_000;
/** A run that served this long resets the backoff. */
const STABLE_MS = 60_000;
const SERVE_WAIT_MS = 240_000;
const RETRY_FAILED_MS = 30_000;

/**
 * One site's VM: boots it with the runner (streamed, verified, cached,
 * copy-on-write instance "site-NAME"), publishes the guest port on a free
 * loopback port, waits until the guest answers HTTP, and restarts it with
 * exponential backoff when it dies.
 */
export class SiteVm {
  state: SiteState = 'stopped';
  port?: number;
  requests = 0;
  restarts = 0;
  private running?: RunningImage;
  private servingSince?: number;
  private backoffMs = BACKOFF_MIN_MS;
  private timer?: NodeJS.Timeout;
  private wanted = false;
  private failedAt = 0;
  private error?: string;
  private run?: Promise<void>;

  constructor(
    public entry: SiteEntry,
    private readonly options: {
      cacheDir: string;
      log: (line: string) => void;
      admitMemory: (vm: SiteVm, memoryMiB: number) => string | undefined;
      /** The node's disk-cache limit: a reason not to boot, or undefined. */
      admitCache: () => Promise<string | undefined>;
      /** Give the VM a standard VGA adapter (its screen on the dashboard). */
      vga?: boolean;
      /** Share this node's cached chunks with the site's swarm (default true; docs/peers.md). */
      share?: boolean;
    },
  ) {}

  get memoryMiB(): number | undefined {
    return this.running?.manifest.hardware.memoryMiB;
  }

  /** Serving: the hub may send requests. */
  get ready(): boolean {
    return this.state === 'running' && this.port !== undefined;
  }

  get vm() {
    return this.running?.vm;
  }

  start(): void {
    this.wanted = true;
    // A refused start (a limit) is tried again at most every RETRY_FAILED_MS, not at every reconcile.
    if (this.state === 'failed' && Date.now() - this.failedAt < RETRY_FAILED_MS) return;
    if (this.state === 'stopped' || this.state === 'failed') this.launch();
  }

  async stop(): Promise<void> {
    this.wanted = false;
    clearTimeout(this.timer);
    const running = this.running;
    if (running) {
      await running.vm.shutdown({ graceful: true, timeoutMs: 5000 }).catch(() => {});
      await running.finished.catch(() => {});
    }
    await this.run?.catch(() => {});
    this.state = 'stopped';
  }

  status(): SiteVmStatus {
    const stats = this.running?.collector.stats;
    return {
      name: this.entry.name,
      state: this.state,
      ...(this.port && this.state === 'running' ? { address: `http://127.0.0.1:${this.port}` } : {}),
      uptimeMs: this.servingSince && this.state === 'running' ? Date.now() - this.servingSince : 0,
      restarts: this.restarts,
      requests: this.requests,
      bytesFetched: stats?.bytesFetched ?? 0,
      bytesFromCache: stats?.bytesFromCache ?? 0,
      ...(this.memoryMiB ? { memoryMiB: this.memoryMiB } : {}),
      screen: Boolean(this.options.vga && this.running),
      ...(this.error ? { error: this.error } : {}),
    };
  }

  private lastScreen?: { at: number; png: Promise<Buffer> };

  /**
   * The VM's screen as PNG, or undefined without a VM or display. One
   * screendump at a time per VM, reused for 500 ms: viewers cannot make
   * QEMU dump faster than twice a second.
   */
  screen(): Promise<Buffer> | undefined {
    const vm = this.running?.vm;
    if (!vm || !this.options.vga) return undefined;
    if (this.lastScreen && Date.now() - this.lastScreen.at < 500) return this.lastScreen.png;
    const png = vm.screendump();
    png.catch(() => {});
    this.lastScreen = { at: Date.now(), png };
    return png;
  }

  private launch(): void {
    this.state = 'starting';
    this.error = undefined;
    this.run = this.boot().catch((err: unknown) => {
      this.error = errorMessage(err);
      this.options.log(`site ${this.entry.name}: ${this.error}`);
      this.afterExit();
    });
  }

  private async boot(): Promise<void> {
    const full = await this.options.admitCache();
    if (full) {
      this.error = full;
      this.state = 'failed';
      this.failedAt = Date.now();
      this.wanted = false;
      this.options.log(`site ${this.entry.name}: ${full}`);
      return;
    }
    this.port = await freeLoopbackPort();
    const running = await startImage({
      link: { repo: this.entry.repo, name: this.entry.image },
      cacheDir: this.options.cacheDir,
      instance: `site-${this.entry.name}`,
      console: 'none',
      keepRunning: true,
      publish: [{ hostAddr: '127.0.0.1', hostPort: this.port, guestPort: this.entry.guestPort, proto: 'tcp' }],
      // Nodes are peers by default: they fetch from and share with the hub's swarm (docs/peers.md).
      peers: { hub: this.entry.hub, share: this.options.share === false ? false : {} },
      ...(this.options.vga ? { extraQemuArgs: ['-device', 'VGA'] } : {}),
    });
    this.running = running;
    const refused = this.options.admitMemory(this, running.manifest.hardware.memoryMiB);
    if (refused) {
      await running.vm.shutdown();
      await running.finished;
      this.running = undefined;
      this.error = refused;
      this.state = 'failed';
      this.failedAt = Date.now();
      this.wanted = false;
      return;
    }
    for (const notice of running.notices) this.options.log(`site ${this.entry.name}: ${notice}`);
    void running.finished.then(({ exit }) => {
      if (this.running !== running) return;
      if (this.wanted) this.options.log(`site ${this.entry.name}: the VM stopped (QEMU exit ${exit.code ?? exit.signal})`);
      this.afterExit();
    });
    if (await this.waitServing(running)) {
      this.state = 'running';
      this.servingSince = Date.now();
      this.options.log(`site ${this.entry.name}: serving on 127.0.0.1:${this.port} (fetched ${running.collector.stats.bytesFetched} bytes)`);
    }
  }

  /** Polls the published port until the guest answers HTTP (any status). */
  private async waitServing(running: RunningImage): Promise<boolean> {
    const deadline = Date.now() + SERVE_WAIT_MS;
    let exited = false;
    void running.finished.then(() => (exited = true));
    while (!exited && this.running === running && Date.now() < deadline) {
      if (await answers(this.port!)) return true;
      await new Promise((r) => setTimeout(r, 300));
    }
    if (!exited && this.running === running) {
      this.error = `the guest did not answer on port ${this.entry.guestPort} within ${SERVE_WAIT_MS / 1000} s`;
      await running.vm.shutdown();
    }
    return false;
  }

  private afterExit(): void {
    const served = this.servingSince ? Date.now() - this.servingSince : 0;
    this.running = undefined;
    this.servingSince = undefined;
    if (!this.wanted) {
      if (this.state !== 'failed') this.state = 'stopped';
      return;
    }
    if (served >= STABLE_MS) this.backoffMs = BACKOFF_MIN_MS;
    this.state = 'backoff';
    this.restarts++;
    this.timer = setTimeout(() => {
      if (this.wanted) this.launch();
    }, this.backoffMs);
    this.backoffMs = Math.min(BACKOFF_MAX_MS, this.backoffMs * 2);
  }
}

function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/', method: 'HEAD', timeout: 2000 }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}
