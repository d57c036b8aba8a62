import { test } from 'node:test';
import assert from 'node:assert/strict';
import { utimes, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { encodeObject } from '../format/node/codecs.js';
import { objectPath } from '../format/digest.js';
import { tempDir, removeDir, pseudoRandom } from '../testing/fixtures.js';
import { CacheDir } from './cache-dir.js';

test('gc evicts least recently used objects down to the limit and removes interrupted writes', async () => {
  const root = await tempDir('hostme-cache-gc-');
  try {
    const cache = new CacheDir(root);
    await cache.ensure();
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const object = encodeObject(pseudoRandom(64 * 1024, i + 1));
      await cache.objects.put(object.id, object.stored);
      // Oldest first: object 0 was used longest ago.
      const when = new Date(Date.now() - (10 - i) * 60_000);
      await utimes(join(root, objectPath(object.id)), when, when);
      ids.push(object.id);
    }
    await mkdir(join(root, 'objects', 'ab'), { recursive: true });
    await writeFile(join(root, 'objects', 'ab', `${'ab'.repeat(32)}.tmp-123-abcd`), 'partial');
    // Reading object 0 makes it the most recently used.
    await cache.objects.get({ id: ids[0]!, length: 64 * 1024 });

    const result = await cache.gc(2 * 64 * 1024 + 100);
    assert.equal(result.removed, 2);
    assert.equal(result.strayTempFiles, 1);
    assert.deepEqual(await Promise.all(ids.map((id) => cache.objects.has(id))), [true, false, false, true]);
    const usage = await cache.usage();
    assert.equal(usage.objects, 2);
  } finally {
    await removeDir(root);
  }
});

test('clear drops objects and cached manifests but keeps instances (the user\'s own writes)', async () => {
  const root = await tempDir('hostme-cache-clear-');
  try {
    const cache = new CacheDir(root);
    await cache.ensure();
    const object = encodeObject(pseudoRandom(1000, 9));
    await cache.objects.put(object.id, object.stored);
    await cache.saveManifest('http://example.org', 'hello', '1', new TextEncoder().encode('{}'));
    await mkdir(cache.instanceDir('hello'), { recursive: true });
    await writeFile(join(cache.instanceDir('hello'), 'overlay.data'), 'mine');
    await cache.clear();
    assert.equal((await cache.usage()).objects, 0);
    assert.equal(await cache.cachedManifest('http://example.org', 'hello'), null);
    assert.deepEqual((await cache.instances()).map((i) => i.name), ['hello']);
  } finally {
    await removeDir(root);
  }
});
