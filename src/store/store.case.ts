import { describe, test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { encodeObject, type EncodedObject } from '../format/node/codecs.js';
import { objectPath } from '../format/digest.js';
import { isHostmeError } from '../errors.js';
import type { ObjectSource, ObjectStore } from './object-store.js';
import { hasCode } from '../testing/has-code.js';

/** What a source under test provides to the shared read cases. */
export interface SourceFixture {
  source: ObjectSource;
  /** Put bytes (good or bad) where the source reads them, behind its back. */
  seed(id: string, stored: Uint8Array): Promise<void>;
  cleanup(): Promise<void>;
}

/** What a store implementation under test provides to the shared cases. */
export interface StoreFixture {
  store: ObjectStore;
  seed(id: string, stored: Uint8Array): Promise<void>;
  cleanup(): Promise<void>;
}

export function codeOf(err: unknown): string {
  return isHostmeError(err) ? err.code : `not a HostmeError: ${String(err)}`;
}

export function compressibleObject(size = 64 * 1024): EncodedObject {
  const data = new Uint8Array(size);
  const tag = randomBytes(16);
  for (let i = 0; i < size; i++) data[i] = i % 64 < 16 ? tag[i % 16]! : i % 13;
  return encodeObject(data);
}

export function randomObject(size = 16 * 1024): EncodedObject {
  return encodeObject(new Uint8Array(randomBytes(size)));
}

/** `seed` for anything reading a repository directory's objects/. */
export function dirSeed(root: string) {
  return async (id: string, bytes: Uint8Array): Promise<void> => {
    const file = join(root, objectPath(id));
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, bytes);
  };
}

/** The contract every ObjectStore honours, run against each implementation. */
export function runObjectStoreCases(name: string, makeStore: () => Promise<StoreFixture>): void {
  describe(`ObjectStore contract: ${name}`, () => {
    let fx: StoreFixture;
    beforeEach(async () => {
      fx = await makeStore();
    });
    afterEach(async () => {
      await fx.store.close();
      await fx.cleanup();
    });

    test('put/get/has round trip (zstd and raw objects)', async () => {
      for (const object of [compressibleObject(), randomObject()]) {
        assert.equal(await fx.store.has(object.id), false);
        await fx.store.put(object.id, object.stored);
        assert.equal(await fx.store.has(object.id), true);
        const got = await fx.store.get({ id: object.id, length: object.length });
        assert.equal(got.id, object.id);
        assert.equal(got.data.length, object.length);
        assert.deepEqual(Buffer.from(got.stored), Buffer.from(object.stored));
        assert.equal(encodeObject(got.data).id, object.id);
        assert.equal(typeof got.source, 'string');
      }
    });

    test('put of an existing object is harmless', async () => {
      const object = compressibleObject();
      await fx.store.put(object.id, object.stored);
      await fx.store.put(object.id, object.stored);
      const got = await fx.store.get({ id: object.id, length: object.length });
      assert.equal(got.id, object.id);
    });

    runSourceCases(() => fx.store, (id, bytes) => fx.seed(id, bytes));
  });
}

/** The contract every ObjectSource honours (dir, HTTP, mirror group, cache, scheduler, browser cache store). */
export function runObjectSourceCases(name: string, make: () => Promise<SourceFixture>): void {
  describe(`ObjectSource contract: ${name}`, () => {
    let fx: SourceFixture;
    beforeEach(async () => {
      fx = await make();
    });
    afterEach(async () => {
      await fx.source.close();
      await fx.cleanup();
    });
    runSourceCases(() => fx.source, (id, bytes) => fx.seed(id, bytes));
  });
}

function runSourceCases(source: () => ObjectSource, seed: (id: string, bytes: Uint8Array) => Promise<void>): void {
    test('a seeded object reads back verified (zstd and raw), has() is true, and it is named by its source', async () => {
      for (const object of [compressibleObject(), randomObject()]) {
        await seed(object.id, object.stored);
        const got = await source().get({ id: object.id, length: object.length });
        assert.equal(got.id, object.id);
        assert.deepEqual(Buffer.from(encodeObject(got.data).stored), Buffer.from(object.stored));
        assert.equal(typeof got.source, 'string');
        assert.equal(await source().has(object.id), true);
      }
    });

    test('a missing object is object-missing naming the id', async () => {
      const object = randomObject();
      await assert.rejects(source().get({ id: object.id, length: object.length }), hasCode('object-missing', object.id));
      assert.equal(await source().has(object.id), false);
    });

    test('corrupted stored bytes are object-invalid', async () => {
      const object = compressibleObject();
      const bad = new Uint8Array(object.stored);
      bad[bad.length - 5] ^= 0x40;
      bad[0] ^= 0xff;
      await seed(object.id, bad);
      await assert.rejects(source().get({ id: object.id, length: object.length }), hasCode('object-invalid', object.id));
    });

    test('a flipped bit in a raw object is object-invalid', async () => {
      const object = randomObject();
      const bad = new Uint8Array(object.stored);
      bad[7] ^= 1;
      await seed(object.id, bad);
      await assert.rejects(source().get({ id: object.id, length: object.length }), hasCode('object-invalid', object.id));
    });

    test("another object's bytes under a name are object-invalid", async () => {
      const wanted = randomObject(8192);
      const other = randomObject(8192);
      await seed(wanted.id, other.stored);
      await assert.rejects(source().get({ id: wanted.id, length: wanted.length }), hasCode('object-invalid', wanted.id));
    });

    test('a truncated object is object-invalid', async () => {
      const object = randomObject();
      await seed(object.id, object.stored.subarray(0, object.stored.length - 100));
      await assert.rejects(source().get({ id: object.id, length: object.length }), hasCode('object-invalid', object.id));
    });
}
