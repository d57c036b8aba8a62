import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReplyBufferPool } from './reply-pool.js';

test('the reply pool hands back buffers of the asked size and keeps at most its byte bound', () => {
  const pool = new ReplyBufferPool(3 * 4112);
  const a = pool.take(4112);
  const b = pool.take(4112);
  assert.equal(a.length, 4112);
  assert.notEqual(a, b);
  pool.give(a);
  assert.equal(pool.take(4112), a, 'a returned buffer is reused for the same size');
  assert.equal(pool.take(8208).length, 8208, 'another size gets its own buffer');
  for (let i = 0; i < 5; i++) pool.give(Buffer.allocUnsafe(4112));
  assert.equal(pool.bytes, 3 * 4112, 'the pool never holds more than its bound');
  pool.give(Buffer.allocUnsafe(100_000));
  assert.equal(pool.bytes, 3 * 4112);
});
