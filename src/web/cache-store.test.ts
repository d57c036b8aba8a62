// The page's Cache-API object store against the shared ObjectStore/ObjectSource
// contract, in Node over a small in-memory stand-in for the Cache API (the
// real one is exercised in Chromium by web.test.ts: cached reloads, storage full).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BrowserCacheStore, type CacheStorageLike } from './reader/cache.js';
import { webCodecs } from '../testing/web-codecs.js';
import { nodeCodecs } from '../format/node/codecs.js';
import { runObjectStoreCases, compressibleObject } from '../store/store.case.js';
import { hasCode } from '../testing/has-code.js';

const KEY_PREFIX = 'https://objects.hostme.invalid/';

/** Cache.match/put/delete over a Map: what BrowserCacheStore uses of the Cache API. */
class MemoryCaches implements CacheStorageLike {
  readonly entries = new Map<string, Uint8Array>();
  failPuts: Error | undefined;
  async open(): Promise<Cache> {
    const entries = this.entries;
    const failure = (): Error | undefined => this.failPuts;
    const key = (request: RequestInfo | URL): string => (typeof request === 'string' ? request : request instanceof URL ? request.href : request.url);
    return {
      async match(request: RequestInfo | URL) {
        const bytes = entries.get(key(request));
        return bytes ? new Response(bytes.slice()) : undefined;
      },
      async put(request: RequestInfo | URL, response: Response) {
        const error = failure();
        if (error) throw error;
        entries.set(key(request), new Uint8Array(await response.arrayBuffer()));
      },
      async delete(request: RequestInfo | URL) {
        return entries.delete(key(request));
      },
    } as unknown as Cache;
  }
}

for (const [name, codecs] of [['web codecs', webCodecs], ['node codecs', nodeCodecs]] as const) {
  runObjectStoreCases(`BrowserCacheStore (${name}, in-memory Cache API)`, async () => {
    const caches = new MemoryCaches();
    return {
      store: new BrowserCacheStore(codecs, caches),
      seed: async (id, bytes) => void caches.entries.set(KEY_PREFIX + id, bytes.slice()),
      cleanup: async () => {},
    };
  });
}

test('BrowserCacheStore: a quota error fails the put with store-full and reports once; later puts fail at once', async () => {
  const caches = new MemoryCaches();
  const warnings: string[] = [];
  const store = new BrowserCacheStore(webCodecs, caches, (m) => warnings.push(m));
  caches.failPuts = new DOMException('quota', 'QuotaExceededError');
  const object = compressibleObject();
  await assert.rejects(store.put(object.id, object.stored), hasCode('store-full'));
  await assert.rejects(store.put(object.id, object.stored), hasCode('store-full'));
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /^Browser storage is full \(quota exceeded\)/);
});

test('BrowserCacheStore: without a Cache API every read is object-missing-free degradation, never a crash', async () => {
  const warnings: string[] = [];
  const store = new BrowserCacheStore(webCodecs, undefined, (m) => warnings.push(m));
  const object = compressibleObject();
  await assert.rejects(store.get({ id: object.id, length: object.length }), hasCode('store-readonly'));
  assert.equal(await store.has(object.id), false);
  assert.equal(warnings.length, 1);
});
