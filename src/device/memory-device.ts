import type { BlockDevice } from './block-device.js';
import { BlockDeviceError, checkRange } from './errors.js';

/** A RAM-backed device: the reference implementation the shared device tests run against. */
export class MemoryDevice implements BlockDevice {
  readonly blockSize: number;
  readonly readOnly: boolean;
  private readonly bytes: Uint8Array;

  constructor(contents: Uint8Array | number, options: { blockSize?: number; readOnly?: boolean } = {}) {
    this.bytes = typeof contents === 'number' ? new Uint8Array(contents) : contents;
    this.blockSize = options.blockSize ?? 4096;
    this.readOnly = options.readOnly ?? false;
  }

  get size(): number {
    return this.bytes.length;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(this.size, offset, length);
    return this.bytes.slice(offset, offset + length);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.assertWritable();
    checkRange(this.size, offset, data.length);
    this.bytes.set(data, offset);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.assertWritable();
    checkRange(this.size, offset, length);
    this.bytes.fill(0, offset, offset + length);
  }

  async trim(offset: number, length: number): Promise<void> {
    await this.writeZeroes(offset, length);
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {}

  private assertWritable(): void {
    if (this.readOnly) throw new BlockDeviceError('EPERM', 'device is read-only');
  }
}
