import { codedError } from '../errors.js';

/**
 * Store failures; the code decides what a combinator does next:
 *  - object-missing: this source lacks the object → a mirror group tries the next one
 *  - store-unavailable: network error, timeout or 5xx after retries → fail over
 *  - store-full / store-readonly: a cache cannot persist → keep running uncached
 *  - store-io: any other local I/O failure
 *  - store-refused: the server refused a write (auth, validation)
 *  - store-bad-redirect: a redirect no retry can fix (loop, non-http scheme)
 *  - store-path-invalid: a repository path that is absolute or climbs out ("..")
 *  - store-closed: the reader was closed while the fetch waited
 * Wrong bytes are FormatError 'object-invalid' (see format/errors.ts).
 */
export const STORE_ERROR_CODES = [
  'object-missing',
  'object-invalid',
  'store-unavailable',
  'store-bad-redirect',
  'store-full',
  'store-readonly',
  'store-io',
  'store-refused',
  'store-path-invalid',
  'store-closed',
] as const;
export type StoreErrorCode = (typeof STORE_ERROR_CODES)[number];

export const StoreError = codedError('StoreError', STORE_ERROR_CODES);
export type StoreError = InstanceType<typeof StoreError>;

export function missing(source: string, what: string): StoreError {
  return new StoreError('object-missing', `${source}: ${what} not found`, { source, what });
}

