import { HostmeError } from '../errors.js';
import type { BlockErrno } from './block-device.js';

/** A block-level failure with the errno the guest should see. */
export class BlockDeviceError extends HostmeError {
  constructor(
    readonly errno: BlockErrno,
    message: string,
    context: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(`block-${errno.toLowerCase()}`, message, { errno, ...context }, options);
  }
}

export function checkRange(size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw new BlockDeviceError('EINVAL', `request [${offset}, +${length}) is outside the ${size}-byte device`, { offset, length, size });
  }
}
