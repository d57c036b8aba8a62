import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir, removeDir } from '../testing/fixtures.js';
import { runMeasured } from '../testing/hostile.js';
import { startRepoServer } from './server.js';

const dist = fileURLToPath(new URL('../', import.meta.url));
const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const TOKEN = 'upload-hostile-token';

// Issue 15 case 5: a 67 KB PUT raised the server to 1.06 GB, three in parallel
// to 2.09 GB. The server runs in a process of its own, whose peak RSS is read.
test('zstd bombs PUT as objects are refused with the server\'s memory bounded', async () => {
  const dir = await tempDir('hostme-upload-bomb-');
  try {
    const script = `
      import { startRepoServer } from './server/server.js';
      import { zstdBomb } from './testing/hostile.js';
      const server = await startRepoServer({ repoDir: ${JSON.stringify(dir)}, port: 0, token: '${TOKEN}' });
      const id = 'ab'.repeat(32);
      const put = (body) => fetch(server.url + '/objects/ab/' + id, { method: 'PUT', headers: { authorization: 'Bearer ${TOKEN}' }, body })
        .then(async (r) => ({ status: r.status, error: (await r.json()).error }));
      // Unknown size past the server's limit; declared 4 GiB; 768 MiB (decoded and hashed in full), three at once.
      const results = await Promise.all([put(zstdBomb(${4 * GiB})), put(zstdBomb(${4 * GiB}, true)), put(zstdBomb(${768 * MiB}))]);
      await server.close();
      console.log(JSON.stringify(results));`;
    const { result, maxRssBytes } = await runMeasured(script, dist);
    const [unknown, declared, hashed] = result as Array<{ status: number; error: { code: string; message: string } }>;
    assert.equal(unknown!.status, 422);
    assert.match(unknown!.error.message, /decodes to more than 1073741824 bytes \(this server's limit\)/);
    assert.equal(declared!.status, 422);
    assert.match(declared!.error.message, /declares 4294967296 bytes of content, more than this server's 1073741824-byte limit/);
    assert.equal(hashed!.status, 422);
    assert.match(hashed!.error.message, /content hashes to [0-9a-f]{64}, not to the id/);
    assert.ok(maxRssBytes < 250 * MiB, `peak server RSS ${(maxRssBytes / MiB).toFixed(0)} MiB for three ~100 KB bombs`);
    // Issue 15 case 9: refused PUTs leave no empty directories behind.
    assert.deepEqual(await readdir(dir), []);
  } finally {
    await removeDir(dir);
  }
});

test('a refused PUT leaves no directory it created; an accepted one keeps its own', async () => {
  const dir = await tempDir('hostme-upload-dirs-');
  const server = await startRepoServer({ repoDir: dir, port: 0, token: TOKEN });
  try {
    const put = (path: string, body: Buffer | string) => fetch(`${server.url}/${path}`, { method: "PUT", headers: { authorization: `Bearer ${TOKEN}` }, body: body as unknown as BodyInit });
    assert.equal((await put(`objects/cd/${'cd'.repeat(32)}`, 'not the content')).status, 422);
    assert.equal((await put('manifests/web/1.json', '{}')).status, 422);
    assert.equal((await put(`keys/${'ef'.repeat(32)}.pub`, 'nope')).status, 422);
    assert.deepEqual(await readdir(dir), []);
    const good = Buffer.from('hello');
    const { createHash } = await import('node:crypto');
    const id = createHash('sha256').update(good).digest('hex');
    assert.equal((await put(`objects/${id.slice(0, 2)}/${id}`, good)).status, 201);
    assert.deepEqual(await readdir(join(dir, 'objects', id.slice(0, 2))), [id]);
  } finally {
    await server.close();
    await removeDir(dir);
  }
});
