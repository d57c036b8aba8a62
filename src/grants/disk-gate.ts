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

export class DiskGate implements BlockDevice {
  write?: (offset: number, data: Uint8Array) => Promise<void>;
  writeZeroes?: (offset: number, length: number) => Promise<void>;
  trim?: (offset: number, length: number) => Promise<void>;
  flush?: () => Promise<void>;
  /** Requests refused since start (by access). */
  refused = 0;

  constructor(
    private readonly inner: BlockDevice,
    public access: DiskAccess = 'rw',
    readonly label = 'disk',
  ) {
    const { write, writeZeroes, trim, flush } = inner;
    if (write) this.write = (offset, data) => this.changing().then(() => write.call(inner, offset, data));
    if (writeZeroes) this.writeZeroes = (offset, length) => this.changing().then(() => writeZeroes.call(inner, offset, length));
    if (trim) this.trim = (offset, length) => this.changing().then(() => trim.call(inner, offset, length));
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
    return this.reading().then(() => this.inner.read(offset, length));
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
