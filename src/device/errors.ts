import { HostmeError } from '../errors.js';
import type { BlockErrno } from './block-device.js';

/** Device codes are `block-` + the errno the guest sees (lower case). */
export const BLOCK_ERROR_CODES = ['block-eio', 'block-enospc', 'block-einval', 'block-eperm', 'block-enotsup'] as const;
export type BlockErrorCode = (typeof BLOCK_ERROR_CODES)[number];

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
