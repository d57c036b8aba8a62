import { StoreError } from '../errors.js';

/** Map a filesystem errno to a store error class. */
export function fromFsError(err: NodeJS.ErrnoException, source: string, action: string): StoreError {
  const code = err.code === 'ENOSPC' || err.code === 'EDQUOT' ? 'store-full' : err.code === 'EROFS' || err.code === 'EACCES' || err.code === 'EPERM' ? 'store-readonly' : 'store-io';
  const advice = code === 'store-full' ? ' (disk full: free space or lower the cache limit)' : code === 'store-readonly' ? ' (not writable: check permissions or pick another directory)' : '';
  return new StoreError(code, `${source}: cannot ${action}: ${err.message}${advice}`, { source, errno: err.code }, { cause: err });
}
