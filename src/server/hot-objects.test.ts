import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { startRepoServer } from './server.js';
import { HotObjects } from './hot-objects.js';
import { pseudoRandom, removeDir, tempDir } from '../testing/fixtures.js';

test('hot objects are answered from memory with the same validators, conditional and range behaviour', async () => {
  const dir = await tempDir('hostme-hot-');
  const body = Buffer.from(pseudoRandom(256 * 1024, 3));
  const id = createHash('sha256').update(body).digest('hex');
  await mkdir(join(dir, 'objects', id.slice(0, 2)), { recursive: true });
  const file = join(dir, 'objects', id.slice(0, 2), id);
  await writeFile(file, body);
  const server = await startRepoServer({ repoDir: dir, port: 0 });
  try {
    const url = `${server.url}/objects/${id.slice(0, 2)}/${id}`;
    const first = await fetch(url);
    assert.equal(first.status, 200);
    assert.deepEqual(Buffer.from(await first.arrayBuffer()), body);
    // Gone from disk: only the memory copy can answer now (objects are immutable, so it is still right).
    await rm(file);
    const second = await fetch(url);
    assert.equal(second.status, 200);
    assert.equal(second.headers.get('etag'), `"${id}"`);
    assert.equal(second.headers.get('cache-control'), 'public, max-age=31536000, immutable');
    assert.deepEqual(Buffer.from(await second.arrayBuffer()), body);
    const range = await fetch(url, { headers: { Range: 'bytes=1000-1999' } });
    assert.equal(range.status, 206);
    assert.equal(range.headers.get('content-range'), `bytes 1000-1999/${body.length}`);
    assert.deepEqual(Buffer.from(await range.arrayBuffer()), body.subarray(1000, 2000));
    const notModified = await fetch(url, { headers: { 'If-None-Match': `"${id}"` } });
    assert.equal(notModified.status, 304);
    const unsatisfiable = await fetch(url, { headers: { Range: `bytes=${body.length}-` } });
    assert.equal(unsatisfiable.status, 416);
    const head = await fetch(url, { method: 'HEAD' });
    assert.equal(head.headers.get('content-length'), String(body.length));
  } finally {
    await server.close();
    await removeDir(dir);
  }
});

test('the hot object cache stays within its byte budget, least recently used first, and skips large objects', () => {
  const hot = new HotObjects(300, 200);
  const entry = (n: number) => ({ body: Buffer.alloc(n), lastModified: '' });
  hot.set('a', entry(100));
  hot.set('b', entry(100));
  hot.get('a');
  hot.set('c', entry(150));
  assert.deepEqual(hot.size, { objects: 2, bytes: 250 });
  assert.ok(hot.get('a') && hot.get('c') && !hot.get('b'));
  hot.set('big', entry(250));
  assert.equal(hot.get('big'), undefined);
});

test('the memory fast path answers plain GET/HEAD with exactly the headers and body of the general path, and logs its bytes', async () => {
  const dir = await tempDir('hostme-fast-');
  const body = Buffer.from(pseudoRandom(40 * 1024, 5));
  const id = createHash('sha256').update(body).digest('hex');
  await mkdir(join(dir, 'objects', id.slice(0, 2)), { recursive: true });
  await writeFile(join(dir, 'objects', id.slice(0, 2), id), body);
  await mkdir(join(dir, 'manifests', 'demo'), { recursive: true });
  await writeFile(join(dir, 'manifests', 'demo', '1.json'), '{"manifest":1}');
  const logged: Array<{ method: string; url: string; bytes: number; status: number }> = [];
  const server = await startRepoServer({ repoDir: dir, port: 0, logger: (e) => logged.push(e) });
  // Date, Connection and Keep-Alive are Node's, per request and connection.
  const headersOf = (r: Response): Record<string, string> => {
    const out: Record<string, string> = {};
    r.headers.forEach((value, name) => {
      if (!['date', 'connection', 'keep-alive'].includes(name)) out[name] = value;
    });
    return out;
  };
  try {
    for (const path of [`/objects/${id.slice(0, 2)}/${id}`, '/manifests/demo/1.json']) {
      const url = server.url + path;
      const filling = await fetch(url); // general path; fills the memory caches
      const fillingBody = Buffer.from(await filling.arrayBuffer());
      const fast = await fetch(url);
      const fastBody = Buffer.from(await fast.arrayBuffer());
      // A validator that does not match forces the general path, which still answers 200.
      const general = await fetch(url, { headers: { 'If-None-Match': '"something-else"' } });
      const generalBody = Buffer.from(await general.arrayBuffer());
      assert.equal(fast.status, 200);
      assert.deepEqual(headersOf(fast), headersOf(general), `headers of ${path}`);
      assert.deepEqual(headersOf(fast), headersOf(filling), `headers of ${path} (first read)`);
      assert.ok(fastBody.equals(generalBody) && fastBody.equals(fillingBody), `body of ${path}`);
      // Percent-encoded, the same path is decoded by the general path: same answer.
      const encoded = await fetch(server.url + path.replace('/demo/', '/d%65mo/').replace('/objects/', '/%6fbjects/'));
      assert.ok(Buffer.from(await encoded.arrayBuffer()).equals(fastBody));
      const head = await fetch(url, { method: 'HEAD' });
      assert.deepEqual(headersOf(head), headersOf(general), `HEAD ${path}`);
      assert.equal((await head.arrayBuffer()).byteLength, 0);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    const manifestGets = logged.filter((e) => e.url === '/manifests/demo/1.json' && e.method === 'GET');
    assert.ok(manifestGets.length >= 3 && manifestGets.every((e) => e.status === 200 && e.bytes === 14), JSON.stringify(manifestGets));
  } finally {
    await server.close();
    await removeDir(dir);
  }
});
