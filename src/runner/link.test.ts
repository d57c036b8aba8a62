import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseImageLink } from './link.js';
import { isHostmeError } from '../errors.js';

test('landing page URLs, with and without /run and a version', () => {
  assert.deepEqual(parseImageLink('http://host:8080/i/hello'), { repo: 'http://host:8080', name: 'hello' });
  assert.deepEqual(parseImageLink('https://example.org/repo/i/hello/run'), { repo: 'https://example.org/repo', name: 'hello' });
  assert.deepEqual(parseImageLink('http://host/i/hello@2'), { repo: 'http://host', name: 'hello', version: '2' });
  // The landing page of a pinned version (its run command) and that version's run page.
  assert.deepEqual(parseImageLink('http://host/i/hello/2'), { repo: 'http://host', name: 'hello', version: '2' });
  assert.deepEqual(parseImageLink('http://host/repo/i/hello/2/run/'), { repo: 'http://host/repo', name: 'hello', version: '2' });
  assert.deepEqual(parseImageLink('http://host/i/hello/run/'), { repo: 'http://host', name: 'hello' });
});

test('handler schemes map to the plain URL', () => {
  assert.deepEqual(parseImageLink('hostme+https://example.org/i/hello'), { repo: 'https://example.org', name: 'hello' });
  assert.deepEqual(parseImageLink('hostme+http://127.0.0.1:8080/i/web'), { repo: 'http://127.0.0.1:8080', name: 'web' });
  assert.deepEqual(parseImageLink('web+hostme:https%3A%2F%2Fexample.org%2Fi%2Fhello'), { repo: 'https://example.org', name: 'hello' });
});

test('a repository URL or directory plus a name', () => {
  assert.deepEqual(parseImageLink('http://host:8080/', 'hello@3'), { repo: 'http://host:8080', name: 'hello', version: '3' });
  assert.deepEqual(parseImageLink('./repo', 'hello'), { repo: './repo', name: 'hello' });
});

test('a link that does not name an image is a usage error that says what to do', () => {
  for (const [link, pattern] of [
    ['http://host:8080', /give a name/],
    ['./repo', /also give the image name/],
    ['http://[bad', /not a valid URL/],
  ] as const) {
    assert.throws(() => parseImageLink(link), (err) => isHostmeError(err, 'usage') && pattern.test(err.message));
  }
});
