import { describe, test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { encodeObject, type EncodedObject } from '../format/node/codecs.js';
import { objectPath } from '../format/digest.js';
import { isHostmeError } from '../errors.js';
import type { ObjectStore } from './object-store.js';

/** What a store implementation under test provides to the shared cases. */
export interface StoreFixture {
  store: ObjectStore;
  /** Directory whose objects/ the store reads (to plant bad bytes behind its back). */
  root: string;
  cleanup(): Promise<void>;
}

export function codeOf(err: unknown): string {
  return isHostmeError(err) ? err.code : `not a HostmeError: ${String(err)}`;
}

/** assert.rejects matcher for a HostmeError code, optionally requiring message parts. */
export function hasCode(code: string, ...parts: string[]) {
  return (err: unknown): boolean => {
    assert.equal(codeOf(err), code, `message: ${(err as Error)?.message}`);
    for (const part of parts) assert.ok((err as Error).message.includes(part), `${(err as Error).message} should mention ${part}`);
    return true;
  };
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

async function plant(root: string, id: string, bytes: Uint8Array): Promise<void> {
  const file = join(root, objectPath(id));
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, bytes);
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

    test('a missing object is object-missing naming the id', async () => {
      const object = randomObject();
      await assert.rejects(fx.store.get({ id: object.id, length: object.length }), hasCode('object-missing', object.id));
      assert.equal(await fx.store.has(object.id), false);
    });

    test('corrupted stored bytes are object-invalid', async () => {
      const object = compressibleObject();
      const bad = new Uint8Array(object.stored);
      bad[bad.length - 5] ^= 0x40;
      bad[0] ^= 0xff;
      await plant(fx.root, object.id, bad);
      await assert.rejects(fx.store.get({ id: object.id, length: object.length }), hasCode('object-invalid', object.id));
    });

    test('a flipped bit in a raw object is object-invalid', async () => {
      const object = randomObject();
      const bad = new Uint8Array(object.stored);
      bad[7] ^= 1;
      await plant(fx.root, object.id, bad);
      await assert.rejects(fx.store.get({ id: object.id, length: object.length }), hasCode('object-invalid', object.id));
    });

    test("another object's bytes under a name are object-invalid", async () => {
      const wanted = randomObject(8192);
      const other = randomObject(8192);
      await plant(fx.root, wanted.id, other.stored);
      await assert.rejects(fx.store.get({ id: wanted.id, length: wanted.length }), hasCode('object-invalid', wanted.id));
    });

    test('a truncated object is object-invalid', async () => {
      const object = randomObject();
      await plant(fx.root, object.id, object.stored.subarray(0, object.stored.length - 100));
      await assert.rejects(fx.store.get({ id: object.id, length: object.length }), hasCode('object-invalid', object.id));
    });
  });
}
