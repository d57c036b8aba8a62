import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { isHostmeError } from '../errors.js';
import { S3Destination } from './destinations/s3.js';
import { exportImage, storeFiles } from './export-image.js';
import { sha256File } from './hash.js';
import { packSmallImage, type SmallImage } from './test-fixture.js';
import { startFaultyProxy, startLocalS3, type LocalS3 } from '../testing/s3-server.js';

interface Received {
  method: string;
  url: string;
  auth?: string;
  bytes: number;
  sha256: string;
}

/** A tiny HTTP server storing PUT bodies in memory; `refuse` decides which requests get 403. */
async function startPutServer(refuse: (req: http.IncomingMessage) => boolean = () => false) {
  const received: Received[] = [];
  const stored = new Map<string, number>();
  const server = http.createServer((req, res) => {
    const hash = createHash('sha256');
    let bytes = 0;
    req.on('data', (d: Buffer) => {
      bytes += d.length;
      hash.update(d);
    });
    req.on('end', () => {
      received.push({ method: req.method!, url: req.url!, auth: req.headers.authorization, bytes, sha256: hash.digest('hex') });
      if (refuse(req)) {
        res.writeHead(403).end('Forbidden: no uploads here\n');
      } else if (req.method === 'PUT') {
        stored.set(req.url!, bytes);
        res.writeHead(201).end();
      } else if (req.method === 'DELETE') {
        stored.delete(req.url!);
        res.writeHead(204).end();
      } else {
        res.writeHead(405).end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, received, stored, close: () => new Promise<void>((r) => server.close(() => r())) };
}

async function leftovers(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => f.startsWith('.hostme-export-'));
}

describe('export destinations', () => {
  let img: SmallImage;
  let work: string;
  before(async () => {
    img = await packSmallImage();
    work = join(img.dir, 'work');
    await mkdir(work);
  });
  after(async () => {
    await img?.cleanup();
  });

  test('local directory: created if missing, only the final file appears', async () => {
    const to = join(img.dir, 'local', 'nested');
    const result = await exportImage({ repo: img.repoDir, name: img.name, format: 'qcow2', to });
    assert.deepEqual(await readdir(to), ['small-1.qcow2']);
    assert.equal(result.files[0]!.url, join(to, 'small-1.qcow2'));
    assert.equal((await stat(result.files[0]!.url)).size, result.files[0]!.size);
    assert.equal(await sha256File(result.files[0]!.url), result.files[0]!.sha256);
  });

  test('HTTP PUT: file under the base URL, with the bearer token from HOSTME_EXPORT_TOKEN', async () => {
    const server = await startPutServer();
    try {
      const result = await exportImage({ repo: img.repoDir, name: img.name, format: 'vmdk', to: `${server.url}/upload/here`, workDir: work, env: { HOSTME_EXPORT_TOKEN: 's3cret' } });
      assert.equal(result.files[0]!.url, `${server.url}/upload/here/small-1.vmdk`);
      assert.equal(server.received.length, 1);
      const put = server.received[0]!;
      assert.equal(put.method, 'PUT');
      assert.equal(put.url, '/upload/here/small-1.vmdk');
      assert.equal(put.auth, 'Bearer s3cret');
      assert.equal(put.bytes, result.files[0]!.size);
      assert.equal(put.sha256, result.files[0]!.sha256);
      assert.deepEqual(await leftovers(work), []);
    } finally {
      await server.close();
    }
  });

  test('HTTP destination refusing (403): export fails with the reason, no temp files, nothing stored', async () => {
    const server = await startPutServer(() => true);
    try {
      await assert.rejects(
        exportImage({ repo: img.repoDir, name: img.name, format: 'qcow2', to: `${server.url}/x/`, workDir: work, env: {} }),
        (err: unknown) => isHostmeError(err, 'export-destination-failed') && /HTTP 403/.test(err.message) && /Forbidden/.test(err.message) && /small-1\.qcow2/.test(err.message),
      );
      assert.equal(server.received[0]?.auth, undefined, 'no token without HOSTME_EXPORT_TOKEN');
      assert.equal(server.stored.size, 0);
      assert.deepEqual(await leftovers(work), []);
    } finally {
      await server.close();
    }
  });

  test('a later file refused: the files already stored by this export are deleted again', async () => {
    const server = await startPutServer((req) => req.method === 'PUT' && req.url === '/b/second.bin');
    const a = join(work, 'first.bin');
    const b = join(work, 'second.bin');
    await writeFile(a, 'first');
    await writeFile(b, 'second');
    try {
      const { openDestination } = await import('./destinations/index.js');
      await assert.rejects(storeFiles(openDestination(`${server.url}/b/`, {}), [{ name: 'first.bin', path: a }, { name: 'second.bin', path: b }]), (err: unknown) =>
        isHostmeError(err, 'export-destination-failed'),
      );
      assert.deepEqual(server.received.map((r) => `${r.method} ${r.url}`), ['PUT /b/first.bin', 'PUT /b/second.bin', 'DELETE /b/first.bin']);
      assert.equal(server.stored.size, 0);
    } finally {
      await server.close();
    }
  });

  describe('S3 (s3rver on loopback)', () => {
    let s3: LocalS3;
    let endpoint: string;
    let env: NodeJS.ProcessEnv;
    let client: S3Client;
    before(async () => {
      s3 = await startLocalS3(join(img.dir, 's3rver'), ['images']);
      ({ endpoint, env, client } = s3);
    });
    after(async () => {
      await s3?.close();
    });

    test('small file: PutObject under the prefix, size and content right', async () => {
      const result = await exportImage({ repo: img.repoDir, name: img.name, format: 'ova', to: 's3://images/exports/v1', workDir: work, env });
      assert.equal(result.destination, 's3://images/exports/v1/');
      assert.equal(result.files[0]!.url, 's3://images/exports/v1/small-1.ova');
      const head = await client.send(new HeadObjectCommand({ Bucket: 'images', Key: 'exports/v1/small-1.ova' }));
      assert.equal(head.ContentLength, result.files[0]!.size);
      const body = await (await client.send(new GetObjectCommand({ Bucket: 'images', Key: 'exports/v1/small-1.ova' }))).Body!.transformToByteArray();
      assert.equal(createHash('sha256').update(body).digest('hex'), result.files[0]!.sha256);
      assert.deepEqual(await leftovers(work), []);
    });

    test('big file: multipart upload (CreateMultipartUpload/UploadPart/Complete), object whole', async () => {
      // 64 MiB raw disk with a 16 MiB threshold and 5 MiB parts: 13 parts.
      const destination = new S3Destination('s3://images/multi', env, { multipartThreshold: 16 * 1024 * 1024, partSize: 5 * 1024 * 1024 });
      const result = await exportImage({ repo: img.repoDir, name: img.name, format: 'raw', bootloader: false, to: 's3://images/multi', destination, workDir: work, env });
      const head = await client.send(new HeadObjectCommand({ Bucket: 'images', Key: 'multi/small-1.raw' }));
      assert.equal(head.ContentLength, 64 * 1024 * 1024);
      assert.deepEqual(destination.stats, { putObjects: 0, multipartUploads: 1, parts: 13, aborted: 0 });
      const body = await (await client.send(new GetObjectCommand({ Bucket: 'images', Key: 'multi/small-1.raw' }))).Body!.transformToByteArray();
      assert.equal(createHash('sha256').update(body).digest('hex'), await sha256File(img.guest.disk));
      assert.equal(result.files[0]!.sha256, await sha256File(img.guest.disk));
      const pending = await client.send(new ListMultipartUploadsCommand({ Bucket: 'images' })).catch(() => undefined);
      assert.equal(pending?.Uploads?.length ?? 0, 0);
    });

    test('a failing part: the multipart upload is aborted, no object, nothing left', async () => {
      // A proxy in front of s3rver that answers 500 to every attempt at part 3.
      const seen: string[] = [];
      const proxy = await startFaultyProxy(endpoint, (req, url) => {
        seen.push(`${req.method} ${url.pathname}${url.searchParams.has('uploadId') ? ' uploadId' : ''}${url.searchParams.has('partNumber') ? ` part ${url.searchParams.get('partNumber')}` : ''}`);
        return req.method === 'PUT' && url.searchParams.get('partNumber') === '3';
      });
      const proxyUrl = proxy.url;
      try {
        const destination = new S3Destination('s3://images/aborted', { ...env, AWS_ENDPOINT_URL: proxyUrl }, { multipartThreshold: 16 * 1024 * 1024, partSize: 5 * 1024 * 1024 });
        await assert.rejects(
          exportImage({ repo: img.repoDir, name: img.name, format: 'raw', bootloader: false, to: 's3://images/aborted', destination, workDir: work }),
          (err: unknown) => isHostmeError(err, 'export-destination-failed') && /injected failure|InternalError/.test(err.message),
        );
        assert.equal(destination.stats.aborted, 1);
        assert.equal(destination.stats.multipartUploads, 0);
        assert.ok(seen.includes('DELETE /images/aborted/small-1.raw uploadId'), `AbortMultipartUpload sent (${seen.join(', ')})`);
        const lastAbort = seen.lastIndexOf('DELETE /images/aborted/small-1.raw uploadId');
        assert.ok(!seen.slice(lastAbort + 1).some((r) => r.includes(' part ')), 'no part uploaded after the abort');
        const listed = await client.send(new ListObjectsV2Command({ Bucket: 'images', Prefix: 'aborted/' }));
        assert.equal(listed.KeyCount ?? 0, 0);
        assert.deepEqual(await leftovers(work), []);
      } finally {
        await proxy.close();
      }
    });

    test('refusing bucket (NoSuchBucket): error with the reason, nothing left', async () => {
      await assert.rejects(
        exportImage({ repo: img.repoDir, name: img.name, format: 'qcow2', to: 's3://no-such-bucket/x', workDir: work, env }),
        (err: unknown) => isHostmeError(err, 'export-destination-failed') && /no-such-bucket/.test(err.message) && /NoSuchBucket|does not exist/i.test(err.message),
      );
      assert.deepEqual(await leftovers(work), []);
      const listed = await client.send(new ListObjectsV2Command({ Bucket: 'images', Prefix: 'x/' }));
      assert.equal(listed.KeyCount ?? 0, 0);
    });

    test('unreachable S3 endpoint: export fails with the reason, nothing left', async () => {
      const closed = http.createServer();
      await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
      const { port } = closed.address() as AddressInfo;
      await new Promise<void>((r) => closed.close(() => r()));
      await assert.rejects(
        exportImage({ repo: img.repoDir, name: img.name, format: 'qcow2', to: 's3://images/y', workDir: work, env: { ...env, AWS_ENDPOINT_URL: `http://127.0.0.1:${port}` } }),
        (err: unknown) => isHostmeError(err, 'export-destination-failed') && /ECONNREFUSED/.test(err.message),
      );
      assert.deepEqual(await leftovers(work), []);
    });
  });
});
