/**
 * Issue 15 case 8: published versions are never rewritten, and a repository
 * is published only by its own keys: locally (pack, build) and over PUT.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { packImage } from '../pack/pack-image.js';
import { buildImage } from '../build/index.js';
import { formatPublicKeyLine, signEnvelope } from '../format/node/keys.js';
import { serializeManifest } from '../format/manifest.js';
import { startRepoServer } from '../server/server.js';
import { hasCode, newKey, pseudoRandom, removeDir, tempDir } from '../testing/fixtures.js';
import { openRepository } from './repository.js';

const TOKEN = 'immutable-token';

test('pack and build: a second NAME@VERSION with other bytes is version-exists; the same image again is not', async () => {
  const dir = await tempDir('hostme-immutable-');
  try {
    const key = newKey();
    const repo = openRepository(join(dir, 'repo'));
    const disk = join(dir, 'disk.raw');
    await writeFile(disk, pseudoRandom(256 * 1024, 1));
    const first = await packImage({ repo, workDir: dir, disk, name: 'demo', version: '1', key });
    const envelope = await readFile(join(dir, 'repo', 'manifests', 'demo', '1.json'));
    // A reproducible re-pack (same disk, same key) returns the version already there.
    const again = await packImage({ repo, workDir: dir, disk, name: 'demo', version: '1', key });
    assert.equal(again.manifestDigest, first.manifestDigest);
    await writeFile(disk, pseudoRandom(256 * 1024, 2));
    await assert.rejects(packImage({ repo, workDir: dir, disk, name: 'demo', version: '1', key }), hasCode('version-exists', (m) => assert.match(m, /demo@1 is already published.*never rewritten/)));
    assert.deepEqual(await readFile(join(dir, 'repo', 'manifests', 'demo', '1.json')), envelope);

    // Another key: refused until the operator adds it to keys/.
    const other = newKey();
    await assert.rejects(packImage({ repo, workDir: dir, disk, name: 'demo', version: '2', key: other }), hasCode('publisher-key-not-pinned', (m) => assert.match(m, new RegExp(`copies its keys/${other.keyId}\\.pub`))));
    await writeFile(join(dir, 'repo', 'keys', `${other.keyId}.pub`), formatPublicKeyLine(other.publicKeyRaw));
    await packImage({ repo, workDir: dir, disk, name: 'demo', version: '2', key: other });

    // hostme build (and so the render service, which builds through it).
    const src = join(dir, 'src');
    await mkdir(join(src, 'root'), { recursive: true });
    await writeFile(join(src, 'root', 'hello'), 'one\n');
    await writeFile(join(src, 'hostme.json'), JSON.stringify({ name: 'demo', version: '3', base: { dir: 'root' } }));
    const build = () => buildImage({ manifestPath: join(src, 'hostme.json'), repoDir: join(dir, 'repo'), key, workDir: dir, cacheDir: join(dir, 'cache') });
    const built = await build();
    assert.equal((await build()).manifestDigest, built.manifestDigest, 'a reproducible rebuild is the same version');
    await writeFile(join(src, 'root', 'hello'), 'two\n');
    await assert.rejects(build(), hasCode('version-exists'));
  } finally {
    await removeDir(dir);
  }
});

test('PUT: a version with other bytes and a second publisher key are refused with 409', async () => {
  const dir = await tempDir('hostme-immutable-put-');
  await mkdir(join(dir, 'served'));
  const server = await startRepoServer({ repoDir: join(dir, 'served'), port: 0, token: TOKEN });
  try {
    const key = newKey();
    const repo = openRepository(join(dir, 'repo'));
    const disk = join(dir, 'disk.raw');
    await writeFile(disk, pseudoRandom(128 * 1024, 3));
    await packImage({ repo, workDir: dir, disk, name: 'demo', version: '1', key });
    const { pushImage } = await import('./push.js');
    const remote = openRepository(server.url, { token: TOKEN, retries: 0 });
    await pushImage(repo, remote, 'demo', '1');
    const put = (path: string, body: Uint8Array | string) =>
      fetch(`${server.url}/${path}`, { method: 'PUT', headers: { authorization: `Bearer ${TOKEN}` }, body: body as unknown as BodyInit }).then(async (r) => ({ status: r.status, error: ((await r.json()) as { error?: { code: string; message: string } }).error }));

    // The same envelope again is a retried push: fine.
    const envelope = await readFile(join(dir, 'repo', 'manifests', 'demo', '1.json'));
    assert.equal((await put('manifests/demo/1.json', envelope)).status, 200);
    // The same version re-signed (another timestamp): refused, the bytes stay.
    const image = await repo.loadImage('demo', '1');
    const resigned = signEnvelope(serializeManifest({ ...image.manifest, created: '2030-01-01T00:00:00Z' }), key);
    const rewrite = await put('manifests/demo/1.json', resigned);
    assert.equal(rewrite.status, 409);
    assert.equal(rewrite.error?.code, 'version-exists');
    assert.deepEqual(await readFile(join(dir, 'served', 'manifests', 'demo', '1.json')), envelope);

    // Another publisher: its key upload and its manifest are both refused.
    const other = newKey();
    const keyUpload = await put(`keys/${other.keyId}.pub`, formatPublicKeyLine(other.publicKeyRaw));
    assert.equal(keyUpload.status, 409);
    assert.equal(keyUpload.error?.code, 'publisher-key-not-pinned');
    const foreign = await put('manifests/demo/2.json', signEnvelope(serializeManifest({ ...image.manifest, version: '2' }), other));
    assert.equal(foreign.status, 409);
    assert.equal(foreign.error?.code, 'publisher-key-not-pinned');
    // Once the operator adds the key on disk, that publisher is accepted.
    await writeFile(join(dir, 'served', 'keys', `${other.keyId}.pub`), formatPublicKeyLine(other.publicKeyRaw));
    assert.equal((await put('manifests/demo/2.json', signEnvelope(serializeManifest({ ...image.manifest, version: '2' }), other))).status, 201);
  } finally {
    await server.close();
    await removeDir(dir);
  }
});
