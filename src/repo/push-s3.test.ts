import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { GetBucketCorsCommand, HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { packSmallImage, type SmallImage } from '../export/test-fixture.js';
import { makeDiskBytes } from '../testing/fixtures.js';
import { runCli } from '../testing/published-guest.js';
import { startFaultyProxy, startLocalS3, type LocalS3 } from '../testing/s3-server.js';
import { openRepository } from './repository.js';
import { loadPrivateKey } from '../pack/publisher-key.js';
import { packImage } from '../pack/pack-image.js';


describe('hostme push to S3 (s3rver in-process) and boot from the bucket', () => {
  let img: SmallImage;
  let s3: LocalS3;
  let endpoint: string;
  let env: Record<string, string>;
  let client: S3Client;

  before(async () => {
    img = await packSmallImage();
    s3 = await startLocalS3(join(img.dir, 's3rver'), ['sites']);
    ({ endpoint, env, client } = s3);
  });
  after(async () => {
    await s3?.close();
    await img?.cleanup();
  });

  test('push: objects immutable with content types, listing no-cache, CORS on request; hostme run boots from the bucket\'s HTTP endpoint', { timeout: 400_000 }, async () => {
    const push = await runCli(['push', img.repoDir, 'small@1', 's3://sites/repo', '--cors', '--json'], { env });
    assert.equal(push.code, 0, push.stderr);
    const result = JSON.parse(push.stdout) as { uploaded: number; skipped: number };
    assert.ok(result.uploaded > 0);
    const head = (key: string) => client.send(new HeadObjectCommand({ Bucket: 'sites', Key: `repo/${key}` }));
    const repo = openRepository(img.repoDir);
    const image = await repo.loadImage('small', '1');
    const object = await head(`objects/${image.manifest.disks[0]!.index.slice(0, 2)}/${image.manifest.disks[0]!.index}`);
    assert.equal(object.CacheControl, 'public, max-age=31536000, immutable');
    assert.equal(object.ContentType, 'application/octet-stream');
    const manifest = await head('manifests/small/1.json');
    assert.equal(manifest.CacheControl, 'public, max-age=31536000, immutable');
    assert.equal(manifest.ContentType, 'application/json');
    const listing = await head('index.json');
    assert.equal(listing.CacheControl, 'no-cache');
    const cors = await client.send(new GetBucketCorsCommand({ Bucket: 'sites' }));
    assert.deepEqual(cors.CORSRules?.[0]?.AllowedMethods, ['GET', 'HEAD']);

    // Pushed again: nothing rewritten.
    const again = await runCli(['push', img.repoDir, 'small@1', 's3://sites/repo', '--json'], { env });
    assert.equal(again.code, 0, again.stderr);
    assert.equal((JSON.parse(again.stdout) as { uploaded: number }).uploaded, 0);

    const run = await runCli(['run', `${endpoint}/sites/repo`, 'small', '--cache', join(img.dir, 'cache'), '--until', 'HOSTME-READY', '--timeout', '240', '--console', 'none'], { timeoutMs: 300_000 });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /ready/);
  });

  test('a push interrupted mid-way leaves the previous version intact and no manifest naming missing objects; the retry completes it', { timeout: 300_000 }, async () => {
    // Version 2: another disk (fresh objects), same key as version 1.
    const key = await loadPrivateKey(join(img.dir, 'publisher.key'));
    const disk = join(img.dir, 'disk2.raw');
    await writeFile(disk, makeDiskBytes(8, 2));
    await packImage({ repo: openRepository(img.repoDir), workDir: img.dir, key, disk, name: 'small', version: '2', kernel: img.guest.kernel, cmdline: img.guest.cmdline, memoryMiB: 128, cpus: 1 });
    await runCli(['push', img.repoDir, 'small@1', 's3://sites/cut'], { env }).then((r) => assert.equal(r.code, 0, r.stderr));
    // A proxy that fails the sixth object PUT (and everything after it).
    let puts = 0;
    const proxy = await startFaultyProxy(endpoint, (req) => req.method === 'PUT' && ++puts >= 6);
    try {
      const cut = await runCli(['push', img.repoDir, 'small@2', 's3://sites/cut'], { env: { ...env, AWS_ENDPOINT_URL: proxy.url } });
      assert.notEqual(cut.code, 0);
      assert.match(cut.stderr, /PUT objects\/.* failed/);
    } finally {
      await proxy.close();
    }
    const bucket = openRepository(`${endpoint}/sites/cut`);
    assert.equal((await bucket.listing()).images.small?.latest, '1', 'the listing still names version 1');
    await bucket.loadImage('small', '1');
    assert.equal(await bucket.transport.read('manifests/small/2.json'), null, 'no manifest of the interrupted version');
    const retry = await runCli(['push', img.repoDir, 'small@2', 's3://sites/cut', '--json'], { env });
    assert.equal(retry.code, 0, retry.stderr);
    assert.ok((JSON.parse(retry.stdout) as { skipped: number }).skipped >= 4, 'objects stored before the cut are not uploaded again');
    assert.equal((await bucket.listing()).images.small?.latest, '2');
    const verify = await runCli(['verify', `${endpoint}/sites/cut`, 'small@2'], { env });
    assert.equal(verify.code, 0, verify.stderr);
  });
});
