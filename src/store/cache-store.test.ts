import { describe, test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CacheStore } from './cache-store.js';
import { DirStore } from './node/dir-store.js';
import { StoreError } from './errors.js';
import { objectPath, type ObjectId } from '../format/digest.js';
import type { GetOptions, ObjectRef, ObjectSource, ObjectStore, VerifiedObject } from './object-store.js';
import { compressibleObject, randomObject } from './store.case.js';
import type { EncodedObject } from '../format/node/codecs.js';

const run = promisify(execFile);

/** Upstream that counts how often it is asked. */
class CountingSource implements ObjectSource {
  readonly name: string;
  gets = 0;
  constructor(readonly inner: ObjectSource) {
    this.name = `counting(${inner.name})`;
  }
  async get(ref: ObjectRef, options?: GetOptions): Promise<VerifiedObject> {
    this.gets++;
    return this.inner.get(ref, options);
  }
  has(id: ObjectId): Promise<boolean> {
    return this.inner.has(id);
  }
  async close(): Promise<void> {}
}

/** A cache whose writes are refused, like a read-only medium. */
class ReadOnlyStore implements ObjectStore {
  readonly name = 'readonly-cache';
  puts = 0;
  constructor(readonly inner: DirStore) {}
  get(ref: ObjectRef, options?: GetOptions): Promise<VerifiedObject> {
    return this.inner.get(ref, options);
  }
  has(id: ObjectId): Promise<boolean> {
    return this.inner.has(id);
  }
  async put(): Promise<void> {
    this.puts++;
    throw new StoreError('store-readonly', `${this.name}: cannot write (read-only file system)`);
  }
  async close(): Promise<void> {}
}

describe('CacheStore', () => {
  let work: string;
  let upstream: CountingSource;
  let objects: EncodedObject[];
  const refOf = (o: EncodedObject) => ({ id: o.id, length: o.length });

  beforeEach(async () => {
    work = await mkdtemp(join(tmpdir(), 'hostme-cache-'));
    const origin = new DirStore(join(work, 'origin'));
    objects = [compressibleObject(), randomObject(64 * 1024), compressibleObject(128 * 1024), randomObject(128 * 1024)];
    for (const o of objects) await origin.put(o.id, o.stored);
    upstream = new CountingSource(origin);
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  test('a miss fetches upstream and keeps the object; the next read is a hit', async () => {
    const cacheDir = new DirStore(join(work, 'cache'));
    const cache = new CacheStore(cacheDir, upstream);
    const hits: unknown[] = [];
    const onHit = (m: unknown) => hits.push(m);
    subscribe('hostme:cache:hit', onHit);
    try {
      const first = await cache.get(refOf(objects[0]!));
      assert.equal(first.id, objects[0]!.id);
      assert.equal(upstream.gets, 1);
      assert.equal(await cacheDir.has(objects[0]!.id), true);
      const second = await cache.get(refOf(objects[0]!));
      assert.deepEqual(Buffer.from(second.data), Buffer.from(first.data));
      assert.equal(upstream.gets, 1, 'served from the cache');
      assert.equal(hits.length, 1);
      assert.equal(cache.degradedReason, undefined);
    } finally {
      unsubscribe('hostme:cache:hit', onHit);
    }
  });

  test('a corrupted cached object is deleted and fetched again', async () => {
    const cacheDir = new DirStore(join(work, 'cache'));
    const cache = new CacheStore(cacheDir, upstream);
    const o = objects[1]!;
    await cache.get(refOf(o));
    const file = join(work, 'cache', objectPath(o.id));
    const bad = await readFile(file);
    bad[10] ^= 0xff;
    await writeFile(file, bad);
    const got = await cache.get(refOf(o));
    assert.equal(got.id, o.id);
    assert.equal(upstream.gets, 2, 'refetched from upstream');
    assert.deepEqual(await readFile(file), Buffer.from(o.stored), 'the cache holds the good bytes again');
    await cache.get(refOf(o));
    assert.equal(upstream.gets, 2);
  });

  test('a cache that refuses writes degrades: reads keep working, reported once', async () => {
    const readonly = new ReadOnlyStore(new DirStore(join(work, 'cache')));
    const cache = new CacheStore(readonly, upstream);
    const degraded: unknown[] = [];
    const onDegraded = (m: unknown) => degraded.push(m);
    subscribe('hostme:cache:degraded', onDegraded);
    try {
      for (const o of objects) assert.equal((await cache.get(refOf(o))).id, o.id);
      for (const o of objects) assert.equal((await cache.get(refOf(o))).id, o.id);
    } finally {
      unsubscribe('hostme:cache:degraded', onDegraded);
    }
    assert.equal(upstream.gets, objects.length * 2, 'nothing could be cached');
    assert.equal(readonly.puts, 1, 'stops trying to persist after the first refusal');
    assert.equal(degraded.length, 1);
    assert.match(cache.degradedReason ?? '', /read-only/);
  });

  test('an upstream miss is still object-missing through the cache', async () => {
    const cache = new CacheStore(new DirStore(join(work, 'cache')), upstream);
    await assert.rejects(cache.get({ id: 'cd'.repeat(32), length: 10 }), (err: unknown) => (err as StoreError).code === 'object-missing');
  });

  test('a full cache disk (1 MiB tmpfs) degrades with "disk full" and reads keep working', async (t) => {
    const mnt = join(work, 'tmpfs');
    await mkdir(mnt);
    try {
      await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    } catch (err) {
      t.skip(`cannot mount a tmpfs here (${(err as Error).message.split('\n')[0]})`);
      return;
    }
    try {
      // Fill the file system completely.
      await writeFile(join(mnt, 'filler'), Buffer.alloc(2 * 1024 * 1024, 1)).catch((err: NodeJS.ErrnoException) => assert.equal(err.code, 'ENOSPC'));
      const cache = new CacheStore(new DirStore(mnt), upstream);
      for (const o of objects) assert.equal((await cache.get(refOf(o))).id, o.id);
      for (const o of objects) assert.equal((await cache.get(refOf(o))).id, o.id);
      assert.match(cache.degradedReason ?? '', /disk full/);
      assert.equal(upstream.gets, objects.length * 2);
      // No partial objects or temp files left behind.
      assert.deepEqual(await listObjects(new DirStore(mnt)), []);
      const strays = await new DirStore(mnt).removeStrayTempFiles();
      assert.equal(strays, 0);
    } finally {
      await run('umount', [mnt]);
    }
  });
});

async function listObjects(store: DirStore): Promise<string[]> {
  const ids: string[] = [];
  for await (const info of store.list()) ids.push(info.id);
  return ids;
}
