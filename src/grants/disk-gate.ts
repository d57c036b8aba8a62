/**
 * The disk caretaker: every disk hostme exports to QEMU over NBD passes
 * through a gate. Revoked, every request fails with EIO at once (QEMU and
 * the guest see I/O errors; the NBD server, the host process and the
 * instance's overlay stay as they are: no write reaches the overlay while
 * revoked). Granted read-only, writes fail with EPERM; read-write, requests
 * pass through. The export keeps advertising what the device supports, so
 * a later grant needs no reconnect and no reboot.
 */
import type { BlockDevice } from '../device/block-device.js';
import { HostmeError } from '../errors.js';

export type DiskAccess = 'rw' | 'ro' | 'none';

/** Disk I/O limits (per second); an absent field is unlimited. */
export interface IoLimit { bytesPerSec?: number; opsPerSec?: number }

/**
 * A token bucket (burst = one second of the rate). A request passes when the
 * bucket holds its cost; one larger than the burst passes on a full bucket
 * and leaves it in debt, so it is not starved. Over any window of T seconds
 * at most rate·T + burst (+ one oversized request) passes.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(readonly rate: number, private readonly now: () => number, readonly burst = rate) {
    this.tokens = burst;
    this.last = now();
  }

  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.rate);
    this.last = t;
  }

  /** Milliseconds until a request of `cost` may pass (0: now). */
  waitMs(cost: number): number {
    this.refill();
    const need = Math.min(cost, this.burst);
    return this.tokens >= need ? 0 : Math.max(1, Math.ceil(((need - this.tokens) / this.rate) * 1000));
  }

  take(cost: number): void {
    this.tokens -= cost;
  }
}

/** The longest single sleep: a changed limit applies within this. */
const MAX_SLEEP_MS = 100;

export class DiskGate implements BlockDevice {
  write?: (offset: number, data: Uint8Array) => Promise<void>;
  writeZeroes?: (offset: number, length: number) => Promise<void>;
  trim?: (offset: number, length: number) => Promise<void>;
  flush?: () => Promise<void>;
  readInto?: (into: Uint8Array, offset: number) => Promise<void>;
  /** Requests refused since start (by access). */
  refused = 0;
  /** Requests that waited for the I/O limit since start. */
  throttled = 0;
  private bytes?: TokenBucket;
  private ops?: TokenBucket;
  private ioLimit: IoLimit = {};
  /** Requests pass the limit in arrival order. */
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly inner: BlockDevice,
    public access: DiskAccess = 'rw',
    readonly label = 'disk',
    /** Milliseconds (injected by tests; default the monotonic clock). */
    private readonly now: () => number = () => performance.now(),
    private readonly sleep: (ms: number) => Promise<void> = (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  ) {
    const { write, writeZeroes, trim, flush, readInto } = inner;
    // The NBD server's read-into-reply fast path, behind the same checks as read().
    if (readInto) this.readInto = (into, offset) => this.reading().then(() => this.throttle(into.length)).then(() => readInto.call(inner, into, offset));
    if (write) this.write = (offset, data) => this.changing().then(() => this.throttle(data.length)).then(() => write.call(inner, offset, data));
    // Zeroing and trimming move no data over the wire: they cost one operation.
    if (writeZeroes) this.writeZeroes = (offset, length) => this.changing().then(() => this.throttle(0)).then(() => writeZeroes.call(inner, offset, length));
    if (trim) this.trim = (offset, length) => this.changing().then(() => this.throttle(0)).then(() => trim.call(inner, offset, length));
    if (flush) this.flush = () => this.reading().then(() => flush.call(inner));
  }

  get size(): number { return this.inner.size; }
  get blockSize(): number { return this.inner.blockSize; }
  get readOnly(): boolean { return this.inner.readOnly; }

  private refuse(errno: 'EIO' | 'EPERM', why: string): Promise<never> {
    this.refused++;
    return Promise.reject(new HostmeError('disk-revoked', `${this.label}: ${why}`, { errno }));
  }

  private reading(): Promise<void> {
    return this.access === 'none' ? this.refuse('EIO', 'access revoked') : Promise.resolve();
  }

  private changing(): Promise<void> {
    if (this.access === 'none') return this.refuse('EIO', 'access revoked');
    if (this.access === 'ro') return this.refuse('EPERM', 'granted read-only');
    return Promise.resolve();
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.reading().then(() => this.throttle(length)).then(() => this.inner.read(offset, length));
  }

  /** The current I/O limit ({} = unlimited). */
  get limit(): IoLimit { return { ...this.ioLimit }; }

  /** Changes the I/O limit at once (waiting requests see the new one within 100 ms). */
  setLimit(limit: IoLimit): void {
    this.ioLimit = { ...limit };
    this.bytes = limit.bytesPerSec ? new TokenBucket(limit.bytesPerSec, this.now) : undefined;
    this.ops = limit.opsPerSec ? new TokenBucket(limit.opsPerSec, this.now) : undefined;
  }

  /**
   * Admits one request of `bytes` now if the limit allows: 0, else the
   * milliseconds to wait before asking again. Exposed for tests.
   */
  tryAdmit(bytes: number): number {
    const wait = Math.max(this.bytes?.waitMs(bytes) ?? 0, this.ops?.waitMs(1) ?? 0);
    if (wait > 0) return wait;
    this.bytes?.take(bytes);
    this.ops?.take(1);
    return 0;
  }

  private throttle(bytes: number): Promise<void> {
    if (!this.bytes && !this.ops) return Promise.resolve();
    const turn = this.queue.then(async () => {
      let wait = this.tryAdmit(bytes);
      if (wait > 0) this.throttled++;
      for (; wait > 0; wait = this.tryAdmit(bytes)) await this.sleep(Math.min(wait, MAX_SLEEP_MS));
    });
    this.queue = turn.catch(() => {});
    return turn;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
