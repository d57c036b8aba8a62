/**
 * Test fixtures for S3 destinations: an in-process S3 server (s3rver) on loopback, and a proxy
 * in front of it that answers an S3 error to the requests a test chooses (fault injection).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { S3Client } from '@aws-sdk/client-s3';

interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}
const S3rver = createRequire(import.meta.url)('s3rver') as new (options: Record<string, unknown>) => S3rverInstance;

export interface LocalS3 {
  endpoint: string;
  /** The AWS_* variables that point the SDK (and hostme) at this server. */
  env: Record<string, string>;
  client: S3Client;
  close(): Promise<void>;
}

export async function startLocalS3(directory: string, buckets: string[]): Promise<LocalS3> {
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory, configureBuckets: buckets.map((name) => ({ name })) });
  const endpoint = `http://127.0.0.1:${(await server.run()).port}`;
  const env = { AWS_ENDPOINT_URL: endpoint, AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };
  const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
  return {
    endpoint,
    env,
    client,
    close: async () => {
      client.destroy();
      await server.close();
    },
  };
}

export interface FaultyProxy {
  url: string;
  close(): Promise<void>;
}

/** A proxy to `upstream` that answers 500 InternalError ("injected failure") where `fail(req, url)` says so. */
export async function startFaultyProxy(upstream: string, fail: (req: http.IncomingMessage, url: URL) => boolean): Promise<FaultyProxy> {
  const proxy = http.createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    if (fail(req, url)) {
      req.resume();
      req.on('end', () => res.writeHead(500, { 'content-type': 'application/xml' }).end('<?xml version="1.0"?><Error><Code>InternalError</Code><Message>injected failure</Message></Error>'));
      return;
    }
    const forward = http.request(new URL(req.url!, upstream), { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode!, answer.headers);
      answer.pipe(res);
    });
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
    close: () => new Promise<void>((r) => proxy.close(() => r())),
  };
}
