import { open, type FileHandle } from 'node:fs/promises';
import type { BlockDevice, BlockErrno } from '../device/block-device.js';
import { BlockDeviceError, checkRange } from '../device/errors.js';
import { preadFully } from '../device/node/pread.js';

const ZERO_CHUNK = 1024 * 1024;

function mapFsError(err: unknown, op: string, context: Record<string, unknown>): BlockDeviceError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  let errno: BlockErrno = 'EIO';
  if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') errno = 'ENOSPC';
  else if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS' || code === 'EBADF') errno = 'EPERM';
  else if (code === 'EINVAL') errno = 'EINVAL';
  return new BlockDeviceError(errno, `${op} failed on ${String(context.path)}: ${(err as Error)?.message ?? String(err)}`, { op, code, ...context }, { cause: err });
}

/**
 * A BlockDevice over a local raw file: positional reads/writes on one
 * FileHandle, fdatasync() on flush. The size is fixed when opened; if the
 * file is shorter than that (truncated underneath us), missing bytes read
 * as zeroes. No trim (the interface makes it optional; nothing advertised).
 */
export class FileDevice implements BlockDevice {
  private closed = false;

  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    readonly size: number,
    readonly blockSize: number,
    readonly readOnly: boolean,
  ) {}

  static async open(path: string, options: { readOnly?: boolean; blockSize?: number } = {}): Promise<FileDevice> {
    const readOnly = options.readOnly ?? false;
    let fh: FileHandle;
    try {
      fh = await open(path, readOnly ? 'r' : 'r+');
    } catch (err) {
      throw mapFsError(err, 'open', { path });
    }
    try {
      const st = await fh.stat();
      return new FileDevice(fh, path, st.size, options.blockSize ?? 4096, readOnly);
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw mapFsError(err, 'stat', { path });
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(this.size, offset, length);
    const buf = Buffer.allocUnsafe(length);
    await this.readInto(buf, offset);
    return buf;
  }

  /** Positional reads straight into `into`; bytes past the end of a shortened file read as zeros. */
  async readInto(into: Uint8Array, offset: number): Promise<void> {
    const length = into.length;
    checkRange(this.size, offset, length);
    try {
      const done = await preadFully(this.fh.fd, into, offset);
      if (done < length) into.fill(0, done);
    } catch (err) {
      throw mapFsError(err, 'read', { path: this.path, offset, length });
    }
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.assertWritable();
    checkRange(this.size, offset, data.length);
    let done = 0;
    try {
      while (done < data.length) {
        const { bytesWritten } = await this.fh.write(data, done, data.length - done, offset + done);
        done += bytesWritten;
      }
    } catch (err) {
      throw mapFsError(err, 'write', { path: this.path, offset, length: data.length });
    }
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.assertWritable();
    checkRange(this.size, offset, length);
    const zeroes = new Uint8Array(Math.min(length, ZERO_CHUNK));
    for (let at = offset; at < offset + length; at += zeroes.length) {
      const n = Math.min(zeroes.length, offset + length - at);
      await this.write(at, n === zeroes.length ? zeroes : zeroes.subarray(0, n));
    }
  }

  async flush(): Promise<void> {
    if (this.readOnly) return;
    try {
      await this.fh.datasync();
    } catch (err) {
      throw mapFsError(err, 'fdatasync', { path: this.path });
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }

  private assertWritable(): void {
    if (this.readOnly) throw new BlockDeviceError('EPERM', `${this.path} is opened read-only`, { path: this.path });
  }
}
