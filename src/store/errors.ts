import { HostmeError } from '../errors.js';

/**
 * Store failures; the code decides what a combinator does next:
 *  - object-missing: this source lacks the object → a mirror group tries the next one
 *  - store-unavailable: network error, timeout or 5xx after retries → fail over
 *  - store-full / store-readonly: a cache cannot persist → keep running uncached
 *  - store-io: any other local I/O failure
 *  - store-refused: the server refused a write (auth, validation)
 * Wrong bytes are FormatError 'object-invalid' (see format/errors.ts).
 */
export class StoreError extends HostmeError {}

export function missing(source: string, what: string): StoreError {
  return new StoreError('object-missing', `${source}: ${what} not found`, { source, what });
}

