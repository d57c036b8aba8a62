import assert from 'node:assert/strict';
import { isHostmeError } from '../errors.js';

/**
 * The one assert.rejects/throws matcher for errors: a HostmeError with this code whose
 * message contains each string part and passes each check function.
 */
export function hasCode(code: string, ...checks: Array<string | ((message: string) => void)>) {
  return (err: unknown): boolean => {
    assert.ok(isHostmeError(err), `expected a HostmeError '${code}', got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    for (const check of checks) {
      if (typeof check === 'string') assert.ok(err.message.includes(check), `${err.message} should mention ${check}`);
      else check(err.message);
    }
    return true;
  };
}
