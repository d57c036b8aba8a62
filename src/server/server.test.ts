import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdtemp, mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { packImage } from '../pack/pack-image.js';
import { generatePublisherKey, parsePrivateKeyPem, signEnvelope, type PublisherKey } from '../format/node/keys.js';
import { HOLE_ID, objectPath } from '../format/digest.js';
import { chunkLength } from '../format/chunk-index.js';
import { compress } from 'zstd-napi';
import { openRepository } from '../repo/repository.js';
import { startRepoServer, type RequestLogEntry, type RunningRepoServer } from './server.js';

const TOKEN = 'test-token-0123456789';
const DESCRIPTION = 'Demo <script>alert("x")</script> & friends';

let tmp: string;
let repoDir: string;
let key: PublisherKey;
let readOnly: RunningRepoServer;
let port: number;
const logged: RequestLogEntry[] = [];
/** Objects of the packed repository: id -> stored bytes. */
const objects = new Map<string, Buffer>();

/** Deterministic pseudo-random disk: random, zero, repetitive (compressible) and random regions. */
function makeDisk(): Buffer {
  const mib = 1024 * 1024;
  const disk = Buffer.alloc(4 * mib);
  let x = 0x2545f491;
  const random = (from: number, to: number) => {
    for (let i = from; i < to; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      disk.writeInt32LE(x | 0, i);
    }
  };
  random(0, mib);
  // mib..2*mib stays zero (holes)
  const text = Buffer.from('hostme compressible block of text 0123456789\n');
  for (let i = 2 * mib; i < 3 * mib; i += text.length) text.copy(disk, i, 0, Math.min(text.length, 3 * mib - i));
  random(3 * mib, 4 * mib);
  return disk;
}

interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** A request with the path sent exactly as given (fetch would normalize "..") and no keep-alive. */
function raw(path: string, options: { method?: string; headers?: Record<string, string | number>; body?: Buffer | string; port?: number } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: options.port ?? port, path, method: options.method ?? 'GET', headers: options.headers, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

async function listObjects(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const prefix of await readdir(join(dir, 'objects')).catch(() => [] as string[])) {
    for (const name of await readdir(join(dir, 'objects', prefix))) out.push(name);
  }
  return out;
}

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'hostme-server-test-'));
  repoDir = join(tmp, 'repo');
  await mkdir(repoDir);
  const diskPath = join(tmp, 'disk.raw');
  await writeFile(diskPath, makeDisk());
  key = parsePrivateKeyPem(generatePublisherKey().privatePem);
  const repo = openRepository(repoDir);
  for (const version of ['1', '2']) {
    await packImage({ repo, workDir: tmp, disk: diskPath, name: 'demo', version, key, description: DESCRIPTION, memoryMiB: 512, cpus: 2 });
  }
  for (const id of await listObjects(repoDir)) objects.set(id, await readFile(join(repoDir, objectPath(id))));
  readOnly = await startRepoServer({ repoDir, logger: (e) => logged.push(e) });
  port = Number(new URL(readOnly.url).port);
});

after(async () => {
  await readOnly?.close();
  await rm(tmp, { recursive: true, force: true });
});

function anObject(compressed: boolean): [string, Buffer] {
  for (const [id, stored] of objects) {
    const isZstd = stored.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]));
    if (isZstd === compressed && sha256(stored) !== id === compressed) return [id, stored];
  }
  throw new Error(`no ${compressed ? 'zstd' : 'raw'} object in the test repository`);
}

test('GET and HEAD of an object: immutable caching, strong ETag, ranges advertised, CORS', async () => {
  const [id, stored] = anObject(false);
  const res = await fetch(`${readOnly.url}/${objectPath(id)}`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('etag'), `"${id}"`);
  assert.equal(res.headers.get('cache-control'), 'public, max-age=31536000, immutable');
  assert.equal(res.headers.get('accept-ranges'), 'bytes');
  assert.equal(res.headers.get('access-control-allow-origin'), '*');
  assert.match(res.headers.get('access-control-expose-headers') ?? '', /ETag/);
  assert.match(res.headers.get('access-control-expose-headers') ?? '', /Content-Range/);
  assert.equal(res.headers.get('content-type'), 'application/octet-stream');
  assert.equal(res.headers.get('content-length'), String(stored.length));
  assert.deepEqual(Buffer.from(await res.arrayBuffer()), stored);

  const head = await raw(`/${objectPath(id)}`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers['etag'], `"${id}"`);
  assert.equal(head.headers['content-length'], String(stored.length));
  assert.equal(head.body.length, 0);
});

test('If-None-Match answers 304; metadata files are no-cache with a content ETag', async () => {
  const [id] = anObject(false);
  const notModified = await fetch(`${readOnly.url}/${objectPath(id)}`, { headers: { 'if-none-match': `"${id}"` } });
  assert.equal(notModified.status, 304);

  const listing = await readFile(join(repoDir, 'index.json'));
  const res = await fetch(`${readOnly.url}/index.json`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('cache-control'), 'no-cache');
  assert.equal(res.headers.get('content-type'), 'application/json');
  assert.equal(res.headers.get('etag'), `"${sha256(listing)}"`);
  await res.arrayBuffer();
  const again = await fetch(`${readOnly.url}/index.json`, { headers: { 'if-none-match': `W/"x", "${sha256(listing)}"` } });
  assert.equal(again.status, 304);
  const manifest = await fetch(`${readOnly.url}/manifests/demo/1.json`);
  assert.equal(manifest.status, 200);
  assert.equal(manifest.headers.get('content-type'), 'application/json');
  await manifest.arrayBuffer();
});

test('Range requests: 206 variants, 416, multi-range and If-Range', async () => {
  const [id, stored] = anObject(false);
  const url = `${readOnly.url}/${objectPath(id)}`;
  const size = stored.length;
  const cases: Array<[string, number, number]> = [
    ['bytes=0-9', 0, 9],
    ['bytes=100-', 100, size - 1],
    ['bytes=-5', size - 5, size - 1],
    [`bytes=10-${size + 1000}`, 10, size - 1],
  ];
  for (const [range, start, end] of cases) {
    const res = await fetch(url, { headers: { range } });
    assert.equal(res.status, 206, range);
    assert.equal(res.headers.get('content-range'), `bytes ${start}-${end}/${size}`, range);
    assert.equal(res.headers.get('content-length'), String(end - start + 1), range);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), stored.subarray(start, end + 1), range);
  }
  for (const range of [`bytes=${size}-`, 'bytes=-0']) {
    const res = await fetch(url, { headers: { range } });
    assert.equal(res.status, 416, range);
    assert.equal(res.headers.get('content-range'), `bytes */${size}`);
    await res.arrayBuffer();
  }
  const multi = await fetch(url, { headers: { range: 'bytes=0-1,5-9' } });
  assert.equal(multi.status, 200, 'multi-range is answered with the full body');
  assert.equal((await multi.arrayBuffer()).byteLength, size);
  const stale = await fetch(url, { headers: { range: 'bytes=0-9', 'if-range': '"0000"' } });
  assert.equal(stale.status, 200);
  await stale.arrayBuffer();
  const fresh = await fetch(url, { headers: { range: 'bytes=0-9', 'if-range': `"${id}"` } });
  assert.equal(fresh.status, 206);
  await fresh.arrayBuffer();
});

test('OPTIONS preflight allows the methods and headers browsers need', async () => {
  const res = await raw('/objects/ab/cd', {
    method: 'OPTIONS',
    headers: { origin: 'https://example.org', 'access-control-request-method': 'GET', 'access-control-request-headers': 'range' },
  });
  assert.equal(res.status, 204);
  assert.equal(res.headers['access-control-allow-origin'], '*');
  assert.match(String(res.headers['access-control-allow-methods']), /GET.*HEAD.*PUT.*OPTIONS/);
  assert.match(String(res.headers['access-control-allow-headers']), /Range/);
  assert.match(String(res.headers['access-control-allow-headers']), /Authorization/);
  assert.ok(Number(res.headers['access-control-max-age']) > 0);
  assert.equal(res.headers['access-control-allow-credentials'], undefined);
});

test('path traversal, symlinks out of the repository, dotfiles and temp files are refused', async () => {
  const outside = join(tmp, 'outside');
  await mkdir(outside, { recursive: true });
  await writeFile(join(outside, 'secret.txt'), 'TOP SECRET');
  await symlink(join(outside, 'secret.txt'), join(repoDir, 'leak.txt'));
  await symlink(outside, join(repoDir, 'leakdir'));
  await writeFile(join(repoDir, '.hidden'), 'hidden');
  await writeFile(join(repoDir, 'objects', 'x.tmp-1-abc'), 'partial');
  try {
    const attempts = [
      '/../etc/passwd',
      '/%2e%2e/%2e%2e/etc/passwd',
      '/objects/..%2f..%2fetc/passwd',
      '/objects/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
      '/objects\\..\\..\\etc\\passwd',
      '/index.json%00.png',
      '//etc/passwd',
      '/leak.txt',
      '/leakdir/secret.txt',
      '/.hidden',
      '/objects/x.tmp-1-abc',
      '/objects/',
      '/%',
    ];
    for (const path of attempts) {
      const res = await raw(path);
      assert.ok(res.status === 400 || res.status === 404, `${path} answered ${res.status}`);
      assert.doesNotMatch(res.body.toString(), /TOP SECRET|root:/, path);
    }
    const notAbsolute = await raw('http://evil.example/../etc/passwd');
    assert.ok(notAbsolute.status === 400 || notAbsolute.status === 404);
  } finally {
    await rm(join(repoDir, 'leak.txt'));
    await rm(join(repoDir, 'leakdir'));
    await rm(join(repoDir, '.hidden'));
    await rm(join(repoDir, 'objects', 'x.tmp-1-abc'));
  }
});

test('small files served from memory follow changes: rewritten, replaced by a symlink out of the repository, removed', async () => {
  const file = join(repoDir, 'manifests', 'demo', 'cache-probe.json');
  const outside = join(tmp, 'outside-probe.json');
  await writeFile(outside, '{"secret":"TOP SECRET"}');
  try {
    await writeFile(file, '{"v":1}');
    const first = await raw('/manifests/demo/cache-probe.json');
    assert.equal(first.body.toString(), '{"v":1}');
    assert.equal((await raw('/manifests/demo/cache-probe.json')).body.toString(), '{"v":1}', 'served again (from memory)');
    await writeFile(file, '{"v":22}');
    const second = await raw('/manifests/demo/cache-probe.json');
    assert.equal(second.body.toString(), '{"v":22}');
    assert.notEqual(second.headers.etag, first.headers.etag);
    const notModified = await raw('/manifests/demo/cache-probe.json', { headers: { 'If-None-Match': String(second.headers.etag) } });
    assert.equal(notModified.status, 304);
    await rm(file);
    await symlink(outside, file);
    const leak = await raw('/manifests/demo/cache-probe.json');
    assert.equal(leak.status, 404);
    assert.doesNotMatch(leak.body.toString(), /TOP SECRET/);
    await rm(file);
    assert.equal((await raw('/manifests/demo/cache-probe.json')).status, 404);
  } finally {
    await rm(file, { force: true });
    await rm(outside, { force: true });
  }
});

test('huge URLs get 414, unknown methods 405, unknown files 404', async () => {
  const huge = await raw(`/objects/${'a'.repeat(5000)}`);
  assert.equal(huge.status, 414);
  const del = await raw('/index.json', { method: 'DELETE' });
  assert.equal(del.status, 405);
  assert.match(String(del.headers['allow']), /GET/);
  const missing = await raw('/objects/00/nothing');
  assert.equal(missing.status, 404);
  assert.equal(JSON.parse(missing.body.toString()).error.code, 'not-found');
});

test('JSON API: listing and image summaries', async () => {
  const listing = (await (await fetch(`${readOnly.url}/api/images`)).json()) as { images: Record<string, { latest: string; versions: Array<{ version: string }> }> };
  assert.equal(listing.images.demo?.latest, '2');
  assert.deepEqual(listing.images.demo?.versions.map((v) => v.version), ['1', '2']);

  const res = await fetch(`${readOnly.url}/api/images/demo`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /application\/json/);
  const summary = (await res.json()) as Record<string, unknown> & { disks: Array<{ size: number; storedBytes?: number }>; signer: { keyId: string } };
  assert.equal(summary.name, 'demo');
  assert.equal(summary.version, '2');
  assert.equal(summary.latest, true);
  assert.equal(summary.description, DESCRIPTION);
  assert.deepEqual(summary.hardware, { arch: 'x86_64', memoryMiB: 512, cpus: 2 });
  assert.equal(summary.bootMode, 'firmware');
  assert.equal(summary.disks[0]!.size, 4 * 1024 * 1024);
  assert.ok((summary.disks[0]!.storedBytes ?? 0) > 0);
  assert.equal(summary.hasSnapshot, false);
  assert.equal(summary.hasPrefetch, false);
  assert.equal(summary.signer.keyId, key.keyId);
  assert.equal(summary.manifestDigest, sha256(await readFile(join(repoDir, 'manifests/demo/2.json'))));
  assert.equal(summary.runCommand, `hostme run http://127.0.0.1:${port}/i/demo`);

  const v1 = (await (await fetch(`${readOnly.url}/api/images/demo/1`)).json()) as { version: string; latest: boolean; runCommand: string };
  assert.equal(v1.version, '1');
  assert.equal(v1.latest, false);
  assert.equal(v1.runCommand, `hostme run http://127.0.0.1:${port}/i/demo/1`);

  for (const path of ['/api/images/nope', '/api/images/demo/9', '/api/images/BAD%20NAME', '/api/other']) {
    const missing = await fetch(`${readOnly.url}${path}`);
    assert.equal(missing.status, 404, path);
    const body = (await missing.json()) as { error: { code: string; message: string } };
    assert.ok(body.error.code && body.error.message, path);
  }
});

test('landing page: details, run command from the Host header, escaped description', async () => {
  for (const path of ['/i/demo', '/i/demo/']) {
    const res = await fetch(`${readOnly.url}${path}`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/html/);
    assert.match(res.headers.get('content-security-policy') ?? '', /default-src 'none'/);
    const html = await res.text();
    assert.match(html, /<h1>demo<\/h1>/);
    assert.ok(html.includes(`hostme run http://127.0.0.1:${port}/i/demo<`), 'run command');
    assert.ok(!html.includes('<script>'), 'description must be escaped');
    assert.ok(html.includes('Demo &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; friends'));
    assert.ok(html.includes('512 MiB'));
    assert.ok(html.includes('x86_64'));
    assert.ok(html.includes('4.0 MiB virtual'));
    assert.ok(html.includes(key.keyId.slice(0, 4)));
    assert.ok(html.includes('href="/i/demo/1"'));
    assert.doesNotMatch(html, /(src|href)="https?:/, 'no external resources');
  }
  const proxied = await raw('/i/demo', { headers: { host: 'images.example.org', 'x-forwarded-proto': 'https' } });
  assert.ok(proxied.body.toString().includes('hostme run https://images.example.org/i/demo<'));
  const evilHost = await raw('/i/demo', { headers: { host: '"><script>x</script>' } });
  assert.equal(evilHost.status, 200);
  assert.ok(!evilHost.body.toString().includes('<script>'));

  const pinned = await fetch(`${readOnly.url}/i/demo/1`);
  assert.ok((await pinned.text()).includes(`hostme run http://127.0.0.1:${port}/i/demo/1<`));
  const index = await fetch(`${readOnly.url}/`);
  const indexHtml = await index.text();
  assert.equal(index.status, 200);
  assert.ok(indexHtml.includes('href="/i/demo"'));
  assert.ok(!indexHtml.includes('<script>'));
  const unknown = await fetch(`${readOnly.url}/i/nope`);
  assert.equal(unknown.status, 404);
  assert.match(await unknown.text(), /Not found/);
});

test('read-only by default: PUT is refused with 403', async () => {
  const [id, stored] = anObject(false);
  const res = await raw(`/${objectPath(id)}`, { method: 'PUT', body: stored });
  assert.equal(res.status, 403);
  assert.equal(JSON.parse(res.body.toString()).error.code, 'read-only');
});

test('the HTTP transport reads an image end to end from the server', async () => {
  const repo = openRepository(readOnly.url, { retries: 0 });
  const image = await repo.loadImage('demo', undefined, { trusted: [key] });
  assert.equal(image.manifest.version, '2');
  let read = 0;
  for (const disk of image.manifest.disks) {
    const index = await repo.readIndex(disk);
    for (let i = 0; i < index.ids.length; i++) {
      if (index.ids[i] === HOLE_ID) continue;
      const object = await repo.objects.get({ id: index.ids[i]!, length: chunkLength(index, i) });
      assert.equal(object.data.length, chunkLength(index, i));
      read++;
    }
  }
  assert.ok(read > 0);
  assert.ok(await repo.objects.has(image.manifest.disks[0]!.index));
  assert.ok(logged.some((e) => e.status === 200 && e.url.startsWith('/objects/')));
});

test('publishing with a token: auth, validation, limits, atomic writes', async (t) => {
  const pushDir = join(tmp, 'push');
  await mkdir(pushDir);
  const server = await startRepoServer({ repoDir: pushDir, token: TOKEN, maxUploadBytes: 1024 * 1024 });
  t.after(() => server.close());
  const p = Number(new URL(server.url).port);
  const put = (path: string, body: Buffer | string, token?: string, headers: Record<string, string | number> = {}) =>
    raw(path, { method: 'PUT', body, port: p, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers } });

  const [rawId, rawStored] = anObject(false);
  const [zId, zStored] = anObject(true);

  const noAuth = await put(`/${objectPath(rawId)}`, rawStored);
  assert.equal(noAuth.status, 401);
  assert.match(String(noAuth.headers['www-authenticate']), /^Bearer/);
  const wrong = await put(`/${objectPath(rawId)}`, rawStored, 'not-the-token');
  assert.equal(wrong.status, 403);
  assert.deepEqual(await listObjects(pushDir), []);

  for (const [id, stored] of [[rawId, rawStored], [zId, zStored]] as const) {
    const ok = await put(`/${objectPath(id)}`, stored, TOKEN);
    assert.equal(ok.status, 201, ok.body.toString());
    const back = await fetch(`${server.url}/${objectPath(id)}`);
    assert.deepEqual(Buffer.from(await back.arrayBuffer()), stored);
    const again = await put(`/${objectPath(id)}`, stored, TOKEN);
    assert.equal(again.status, 200);
    assert.equal(JSON.parse(again.body.toString()).existed, true);
  }

  // Wrong bytes under an id: raw, and a valid zstd frame of other content.
  const otherId = sha256(Buffer.from('some other content'));
  const bad = await put(`/${objectPath(otherId)}`, rawStored, TOKEN);
  assert.equal(bad.status, 422);
  assert.equal(JSON.parse(bad.body.toString()).error.code, 'object-invalid');
  const badZstd = await put(`/${objectPath(otherId)}`, zStored, TOKEN);
  assert.equal(badZstd.status, 422);
  const garbageFrame = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(100, 7)]);
  assert.equal((await put(`/${objectPath(otherId)}`, garbageFrame, TOKEN)).status, 422);
  // A zstd frame that is not smaller than its content cannot be told apart from raw by readers.
  const tiny = Buffer.from('x');
  const bloated = compress(tiny);
  assert.ok(bloated.length > tiny.length);
  assert.equal((await put(`/${objectPath(sha256(tiny))}`, bloated, TOKEN)).status, 422);

  // Too large: declared up front, and streamed without a length.
  const big = Buffer.alloc(2 * 1024 * 1024, 1);
  const declared = await put(`/${objectPath(sha256(big))}`, big, TOKEN);
  assert.equal(declared.status, 413);
  const streamed = await new Promise<number | Error>((resolve) => {
    const req = request(
      { host: '127.0.0.1', port: p, path: `/${objectPath(sha256(big))}`, method: 'PUT', agent: false, headers: { authorization: `Bearer ${TOKEN}`, 'transfer-encoding': 'chunked' } },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('error', (err) => resolve(err));
    for (let i = 0; i < 32; i++) req.write(big.subarray(i * 65536, (i + 1) * 65536));
    req.end();
  });
  if (typeof streamed === 'number') assert.equal(streamed, 413);
  assert.ok(!(await listObjects(pushDir)).some((n) => n.includes('.tmp-')), 'no temp files left');
  assert.ok(!(await listObjects(pushDir)).includes(sha256(big)));
  assert.ok(!(await listObjects(pushDir)).includes(otherId));

  // Paths outside the allowed set.
  for (const path of ['/other.txt', '/objects/ab/cd', `/objects/00/${rawId}`, '/manifests/demo/1.txt', '/keys/abc.pub', '/i/demo']) {
    const res = await put(path, 'x', TOKEN);
    assert.equal(res.status, 400, path);
  }

  // Manifests: tampered, wrong place, and objects missing are refused; the real one is accepted once its objects are there.
  const envelope = await readFile(join(repoDir, 'manifests/demo/1.json'));
  const tampered = JSON.parse(envelope.toString()) as { payload: string };
  tampered.payload = Buffer.from(Buffer.from(tampered.payload, 'base64').toString().replace('"memoryMiB": 512', '"memoryMiB": 4096')).toString('base64');
  const tamperedRes = await put('/manifests/demo/1.json', JSON.stringify(tampered), TOKEN);
  assert.equal(tamperedRes.status, 422);
  assert.match(JSON.parse(tamperedRes.body.toString()).error.message, /tampered|modified/);
  assert.equal((await put('/manifests/demo/7.json', envelope, TOKEN)).status, 422, 'stored under the wrong version');
  assert.equal((await put('/manifests/demo/1.json', 'not json', TOKEN)).status, 422);
  const early = await put('/manifests/demo/1.json', envelope, TOKEN);
  assert.equal(early.status, 422);
  assert.match(JSON.parse(early.body.toString()).error.message, /upload objects before the manifest/);

  // index.json must only list manifests that are present with the claimed digest.
  const listing = await readFile(join(repoDir, 'index.json'));
  assert.equal((await put('/index.json', listing, TOKEN)).status, 422);

  // Keys: must parse and match their id.
  const keyFile = await readFile(join(repoDir, `keys/${key.keyId}.pub`));
  assert.equal((await put(`/keys/${key.keyId}.pub`, keyFile, TOKEN)).status, 201);
  assert.equal((await put(`/keys/${'0'.repeat(64)}.pub`, keyFile, TOKEN)).status, 422);
  assert.equal((await put('/hostme-repo.json', '{"format":"nope"}', TOKEN)).status, 422);
  assert.equal((await put('/hostme-repo.json', await readFile(join(repoDir, 'hostme-repo.json')), TOKEN)).status, 201);

  // A signature over a manifest whose content is wrong in a way the schema catches.
  const unsigned = signEnvelope(new TextEncoder().encode('{"formatVersion":1}'), key);
  assert.equal((await put('/manifests/demo/3.json', Buffer.from(unsigned), TOKEN)).status, 422);
});

test('push end to end: packImage through the HTTP transport, then read it back', async (t) => {
  const pushDir = join(tmp, 'push-e2e');
  await mkdir(pushDir);
  const server = await startRepoServer({ repoDir: pushDir, token: TOKEN });
  t.after(() => server.close());
  const diskPath = join(tmp, 'disk.raw');
  const remote = openRepository(server.url, { token: TOKEN, retries: 0 });
  const summary = await packImage({ repo: remote, workDir: tmp, disk: diskPath, name: 'pushed', version: '1', key, description: 'pushed over HTTP' });
  assert.equal(summary.version, '1');
  const reader = openRepository(server.url, { retries: 0 });
  const image = await reader.loadImage('pushed', '1', { trusted: [key] });
  const index = await reader.readIndex(image.manifest.disks[0]!);
  for (let i = 0; i < index.ids.length; i++) {
    if (index.ids[i] !== HOLE_ID) await reader.objects.get({ id: index.ids[i]!, length: chunkLength(index, i) });
  }
  // The server's own view (a directory scan) lists it, whatever index.json says.
  const api = (await (await fetch(`${server.url}/api/images/pushed`)).json()) as { version: string };
  assert.equal(api.version, '1');
  assert.ok(!(await listObjects(pushDir)).some((n) => n.includes('.tmp-')));
});
