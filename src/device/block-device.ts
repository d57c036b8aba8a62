/**
 * The one interface every disk layer implements (remote image, verified fetch,
 * cache, copy-on-write overlay) and the NBD server exports. Offsets and lengths
 * are bytes. A layer that does not support an optional operation leaves it
 * undefined; the NBD server then does not advertise it.
 */
export interface BlockDevice {
  /** Virtual size in bytes. */
  readonly size: number;
  /** Smallest efficient I/O unit (the NBD preferred block size). */
  readonly blockSize: number;
  readonly readOnly: boolean;
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Optional fast path: fill all of `into` with the bytes at `offset`
   * (into.length bytes, same range rules as read). Lets the NBD server read
   * straight into its reply buffer, with no intermediate copy or allocation.
   */
  readInto?(into: Uint8Array, offset: number): Promise<void>;
  write?(offset: number, data: Uint8Array): Promise<void>;
  writeZeroes?(offset: number, length: number): Promise<void>;
  trim?(offset: number, length: number): Promise<void>;
  flush?(): Promise<void>;
  close(): Promise<void>;
}

/** Errno-like classes so the NBD server can report the right error to the guest. */
export type BlockErrno = 'EIO' | 'ENOSPC' | 'EINVAL' | 'EPERM' | 'ENOTSUP';
