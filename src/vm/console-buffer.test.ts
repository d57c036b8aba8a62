import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConsoleBuffer } from './console-buffer.js';
import { isHostmeError } from '../errors.js';

const bytes = (text: string) => new TextEncoder().encode(text);

test('the ring keeps the last output only, and positions keep counting', () => {
  const console = new ConsoleBuffer(10);
  for (let i = 0; i < 10; i++) console.write(bytes('0123456789'));
  assert.equal(console.length, 100);
  assert.ok(console.text.length <= 20, `kept ${console.text.length} characters`);
  assert.ok(console.text.endsWith('0123456789'));
});

test('a character split across writes is decoded whole', () => {
  const console = new ConsoleBuffer();
  const euro = bytes('€');
  console.write(euro.subarray(0, 1));
  console.write(euro.subarray(1));
  assert.equal(console.text, '€');
});

test('waitFor sees only output after `since`, and listeners see each chunk', async () => {
  const console = new ConsoleBuffer();
  const seen: string[] = [];
  const unsubscribe = console.subscribe((text) => seen.push(text));
  console.write(bytes('login: '));
  const since = console.length;
  const prompt = console.waitFor(/login: /, { since });
  console.write(bytes('root\n'));
  console.write(bytes('login: '));
  assert.equal((await prompt).index, 5, 'the match is the second prompt, counted from since');
  unsubscribe();
  console.write(bytes('more'));
  assert.deepEqual(seen, ['login: ', 'root\n', 'login: ']);
});

test('the ready mark is found across chunks with a bounded rescan', async () => {
  const console = new ConsoleBuffer();
  const ready = console.waitFor(/HOSTME-READY/, { since: 0, overlap: 256 });
  console.write(bytes('x'.repeat(10_000) + 'HOSTME-RE'));
  console.write(bytes('ADY\n'));
  assert.equal((await ready)[0], 'HOSTME-READY');
});

test('waits reject with vm-exited when the output ends, and with console-timeout after their bound', async () => {
  const console = new ConsoleBuffer();
  const pending = console.waitFor(/never/);
  const bounded = console.waitFor(/never/, { timeoutMs: 20 });
  await assert.rejects(bounded, (err) => isHostmeError(err, 'console-timeout'));
  console.end();
  await assert.rejects(pending, (err) => isHostmeError(err, 'vm-exited'));
  await assert.rejects(console.waitFor(/never/), (err) => isHostmeError(err, 'vm-exited'), 'a wait after the end rejects at once');
  const ended = new ConsoleBuffer();
  ended.write(bytes('bye\n'));
  ended.end();
  assert.equal((await ended.waitFor(/bye/, { since: 0 }))[0], 'bye', 'output before the end still matches');
});
