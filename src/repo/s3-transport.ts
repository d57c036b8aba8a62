/**
 * A repository in an S3-compatible bucket (s3://BUCKET/PREFIX), for
 * `hostme push`: readers fetch it over the bucket's plain HTTP endpoint
 * (a repository is static files), only the publisher needs credentials.
 * Every write sets the headers a CDN or browser needs: content-addressed
 * objects, manifests and keys never change (`Cache-Control: public,
 * max-age=31536000, immutable`), the listing and marker are revalidated
 * (`no-cache`); JSON is application/json, objects application/octet-stream.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { HostmeError } from '../errors.js';
import { parseS3Url, s3ClientConfig, sdk } from '../export/destinations/s3.js';
import { assertRepoPath, type ReadOptions, type RepoTransport } from '../store/transport.js';

export const IMMUTABLE = 'public, max-age=31536000, immutable';

/** Headers of a repository file by its path (docs/format.md section 1: what is mutable). */
export function objectHeaders(path: string): { contentType: string; cacheControl: string } {
  const mutable = path === 'index.json' || path === 'hostme-repo.json';
  const contentType = path.endsWith('.json') ? 'application/json' : path.endsWith('.pub') ? 'text/plain; charset=utf-8' : 'application/octet-stream';
  return { contentType, cacheControl: mutable ? 'no-cache' : IMMUTABLE };
}

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}

export class S3Transport implements RepoTransport {
  readonly location: string;
  private readonly bucket: string;
  private readonly prefix: string;
  private client?: S3Client;

  constructor(url: string, private readonly env: NodeJS.ProcessEnv = process.env) {
    ({ bucket: this.bucket, prefix: this.prefix } = parseS3Url(url));
    this.location = `s3://${this.bucket}/${this.prefix}`;
  }

  private async s3() {
    const mod = await sdk();
    this.client ??= new mod.S3Client(s3ClientConfig(this.env));
    return { client: this.client, mod };
  }

  private fail(what: string, path: string, err: unknown): HostmeError {
    const status = statusOf(err);
    return new HostmeError('s3-failed', `${this.location}: ${what} ${path} failed: ${(err as Error).name ?? ''} ${(err as Error).message ?? ''}${status ? ` (HTTP ${status})` : ''}`.replace(/\s+/g, ' ').trim(), { path, status }, { cause: err });
  }

  async read(path: string, options: ReadOptions = {}): Promise<Uint8Array | null> {
    assertRepoPath(path);
    const { client, mod } = await this.s3();
    try {
      const out = await client.send(new mod.GetObjectCommand({ Bucket: this.bucket, Key: this.prefix + path }), { abortSignal: options.signal });
      if (options.maxBytes !== undefined && (out.ContentLength ?? 0) > options.maxBytes) throw new HostmeError('s3-failed', `${this.location}: ${path} is over ${options.maxBytes} bytes`);
      return await out.Body!.transformToByteArray();
    } catch (err) {
      if (statusOf(err) === 404 || (err as Error).name === 'NoSuchKey') return null;
      throw err instanceof HostmeError ? err : this.fail('GET', path, err);
    }
  }

  async exists(path: string): Promise<boolean> {
    assertRepoPath(path);
    const { client, mod } = await this.s3();
    try {
      await client.send(new mod.HeadObjectCommand({ Bucket: this.bucket, Key: this.prefix + path }));
      return true;
    } catch (err) {
      if (statusOf(err) === 404 || (err as Error).name === 'NotFound') return false;
      throw this.fail('HEAD', path, err);
    }
  }

  /** One PutObject: S3 makes the object appear whole or not at all. */
  async write(path: string, data: Uint8Array): Promise<void> {
    assertRepoPath(path);
    const { client, mod } = await this.s3();
    const { contentType, cacheControl } = objectHeaders(path);
    try {
      await client.send(new mod.PutObjectCommand({ Bucket: this.bucket, Key: this.prefix + path, Body: data, ContentType: contentType, CacheControl: cacheControl, ContentLength: data.length }));
    } catch (err) {
      throw this.fail('PUT', path, err);
    }
  }

  /** Lets browsers on any origin read the repository (GET/HEAD with Range), as the run page does. */
  async allowCors(): Promise<void> {
    const { client, mod } = await this.s3();
    try {
      await client.send(
        new mod.PutBucketCorsCommand({
          Bucket: this.bucket,
          CORSConfiguration: { CORSRules: [{ AllowedMethods: ['GET', 'HEAD'], AllowedOrigins: ['*'], AllowedHeaders: ['Range', 'If-None-Match'], ExposeHeaders: ['Content-Length', 'Content-Range', 'ETag'], MaxAgeSeconds: 86400 }] },
        }),
      );
    } catch (err) {
      throw this.fail('PutBucketCors on', this.bucket, err);
    }
  }

  async close(): Promise<void> {
    this.client?.destroy();
  }
}
