import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TransportStore } from './transport-store.js';
import { DirStore } from './node/dir-store.js';
import { HttpTransport } from './http-transport.js';
import { DirTransport } from './node/dir-transport.js';
import { StaticServer } from './testing/static-server.js';
import { hasCode } from '../testing/has-code.js';
import { compressibleObject, dirSeed, randomObject, runObjectSourceCases, runObjectStoreCases } from './store.case.js';
import { MirrorGroup } from './mirror-group.js';
import type { ObjectSource } from './object-store.js';
import { CacheStore } from './cache-store.js';
import { FetchScheduler } from './fetch-scheduler.js';
import { nodeCodecs } from '../format/node/codecs.js';

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'hostme-store-'));
}

runObjectStoreCases('DirStore', async () => {
  const root = await tempDir();
  return { store: new DirStore(root), seed: dirSeed(root), cleanup: () => rm(root, { recursive: true, force: true }) };
});

runObjectStoreCases('TransportStore over HttpTransport', async () => {
  const root = await tempDir();
  const server = await StaticServer.start(root, { writable: true });

  const store = new TransportStore(new HttpTransport(server.url, { retries: 1, backoffMs: 1, timeoutMs: 5000 }), nodeCodecs);
  return {
    store,
    seed: dirSeed(root),
    cleanup: async () => {
      await server.close();
      await rm(root, { recursive: true, force: true });
    },
  };
});

/** Read-only combinators over directories: the same contract, one layer up. */
async function overDirs(build: (dirs: string[]) => ObjectSource, count = 1) {
  const dirs = await Promise.all(Array.from({ length: count }, () => tempDir()));
  return { source: build(dirs), seed: dirSeed(dirs[dirs.length - 1]!), cleanup: async () => void (await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))) };
}
runObjectSourceCases('MirrorGroup of one mirror', () => overDirs(([d]) => new MirrorGroup([new DirStore(d!)])));
runObjectSourceCases('MirrorGroup whose first mirror lacks everything', () => overDirs(([empty, full]) => new MirrorGroup([new DirStore(empty!), new DirStore(full!)]), 2));
runObjectSourceCases('CacheStore (empty cache) in front of a store', () => overDirs(([cache, upstream]) => new CacheStore(new DirStore(cache!), new DirStore(upstream!)), 2));
runObjectSourceCases('FetchScheduler in front of a store', () => overDirs(([d]) => new FetchScheduler(new DirStore(d!), 4)));

/** A TCP port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('HttpTransport failure handling', () => {
  let root: string;
  let server: StaticServer;
  const object = compressibleObject();
  const ref = { id: object.id, length: object.length };

  before(async () => {
    root = await tempDir();
    await new DirStore(root).put(object.id, object.stored);
    server = await StaticServer.start(root);
  });
  after(async () => {
    await server.close();
    await rm(root, { recursive: true, force: true });
  });

  const storeFor = (url: string, options: ConstructorParameters<typeof HttpTransport>[1] = {}) =>
    new TransportStore(new HttpTransport(url, { backoffMs: 1, timeoutMs: 5000, ...options }), nodeCodecs);

  test('transient 500s are retried and the read succeeds', async () => {
    server.behavior = { failures: 2 };
    const before = server.count('objects/');
    const got = await storeFor(server.url, { retries: 3 }).get(ref);
    assert.equal(got.id, object.id);
    assert.equal(server.count('objects/') - before, 3, 'two failures then one success');
  });

  test('persistent 500 is store-unavailable after all attempts', async () => {
    server.behavior = { alwaysFail: true };
    const before = server.count('objects/');
    await assert.rejects(storeFor(server.url, { retries: 2 }).get(ref), hasCode('store-unavailable', 'HTTP 500', '3 attempts'));
    assert.equal(server.count('objects/') - before, 3);
  });

  test('a 4xx other than 404 is not retried', async () => {
    server.behavior = {};
    const before = server.count();
    // PUT to a read-only static server: 405, refused without retrying.
    await assert.rejects(storeFor(server.url, { retries: 3 }).put(object.id, object.stored), hasCode('store-refused'));
    assert.equal(server.count() - before, 1);
  });

  test('a server that does not answer in time is store-unavailable', async () => {
    server.behavior = { delayMs: 2000 };
    await assert.rejects(storeFor(server.url, { retries: 1, timeoutMs: 100 }).get(ref), hasCode('store-unavailable', 'no answer within 100 ms'));
    server.behavior = {};
  });

  test('dropped connections are store-unavailable', async () => {
    server.behavior = { drop: true };
    await assert.rejects(storeFor(server.url, { retries: 1 }).get(ref), hasCode('store-unavailable'));
    server.behavior = {};
  });

  test('connection refused is store-unavailable', async () => {
    const port = await closedPort();
    await assert.rejects(storeFor(`http://127.0.0.1:${port}/repo`, { retries: 1 }).get(ref), hasCode('store-unavailable', '2 attempts'));
  });

  test('a server that ignores Range works (hostme never needs Range)', async () => {
    server.behavior = { ignoreRange: true };
    const got = await storeFor(server.url).get(ref);
    assert.equal(got.id, object.id);
    assert.ok(server.requests.every((r) => r.range === undefined), 'no Range header was sent');
    server.behavior = {};
  });

  test('a lying server is object-invalid, a lacking one object-missing', async () => {
    const other = randomObject();
    await new DirStore(root).put(other.id, other.stored);
    server.behavior = { lie: true };
    await assert.rejects(storeFor(server.url).get(ref), hasCode('object-invalid', object.id));
    server.behavior = { lackObjects: true };
    await assert.rejects(storeFor(server.url).get(ref), hasCode('object-missing', object.id));
    server.behavior = {};
  });

  test('bodies larger than maxBytes are refused', async () => {
    server.behavior = {};
    const transport = new HttpTransport(server.url, { backoffMs: 1 });
    const path = `objects/${object.id.slice(0, 2)}/${object.id}`;
    await assert.rejects(transport.read(path, { maxBytes: 10 }), (err: unknown) => (err as { code?: string }).code !== undefined);
    assert.equal((await transport.read(path))?.length, object.stored.length);
  });
});

describe('DirTransport', () => {
  test('read of a missing file is null, write is atomic and readable', async () => {
    const root = await tempDir();
    try {
      const dir = new DirTransport(root);
      assert.equal(await dir.read('a/b.json'), null);
      await dir.write('a/b.json', new TextEncoder().encode('{}'));
      assert.equal(new TextDecoder().decode((await dir.read('a/b.json'))!), '{}');
      assert.equal(await dir.exists('a/b.json'), true);
      assert.throws(() => dir.fullPath('../escape'));
      assert.throws(() => dir.fullPath('/etc/passwd'));
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
