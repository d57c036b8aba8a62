import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import type { CompletedPart, S3Client, S3ClientConfig } from '@aws-sdk/client-s3';

type Sdk = typeof import('@aws-sdk/client-s3');
let sdkModule: Sdk | undefined;
/** The AWS SDK takes ~0.2 s to load: only pay for it when an s3:// destination is used. */
export async function sdk(): Promise<Sdk> {
  return (sdkModule ??= await import('@aws-sdk/client-s3'));
}
import { ExportError } from '../errors.js';
import type { Destination, DestinationKind, UploadItem, UploadProgress } from './types.js';

const MIB = 1024 * 1024;
/** Files larger than this go up as multipart uploads. */
export const MULTIPART_THRESHOLD = 64 * MIB;
export const DEFAULT_PART_SIZE = 16 * MIB;
const MAX_PARTS = 10_000;
const PART_CONCURRENCY = 4;

export interface S3DestinationOptions {
  multipartThreshold?: number;
  partSize?: number;
}

export function parseS3Url(dest: string): { bucket: string; prefix: string } {
  const match = /^s3:\/\/([^/]+)\/?(.*)$/i.exec(dest);
  if (!match || !match[1]) throw new ExportError('usage', `"${dest}" is not an s3://BUCKET/PREFIX URL`);
  const prefix = match[2]!.replace(/^\/+|\/+$/g, '');
  return { bucket: match[1], prefix: prefix ? `${prefix}/` : '' };
}

/** Client settings from the environment (AWS_ENDPOINT_URL/HOSTME_S3_ENDPOINT, keys, region): path-style, checksums only when required. */
export function s3ClientConfig(env: NodeJS.ProcessEnv): S3ClientConfig {
  const endpoint = env.AWS_ENDPOINT_URL || env.HOSTME_S3_ENDPOINT || undefined;
  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  return {
    region: env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1',
    ...(endpoint ? { endpoint } : {}),
    forcePathStyle: true,
    maxAttempts: 2,
    // Only checksum when S3 requires it: the default streams bodies as aws-chunked with a CRC
    // trailer, which many S3-compatible servers (and s3rver) store verbatim or reject.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: { connectionTimeout: 10_000, requestTimeout: 300_000 },
    ...(accessKeyId && secretAccessKey ? { credentials: { accessKeyId, secretAccessKey, ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}) } } : {}),
  };
}

export class S3Destination implements Destination {
  readonly kind = 's3';
  readonly location: string;
  readonly bucket: string;
  readonly prefix: string;
  private clientInstance?: S3Client;
  private readonly config: S3ClientConfig;
  private readonly threshold: number;
  private readonly partSize: number;

  constructor(dest: string, env: NodeJS.ProcessEnv, options: S3DestinationOptions = {}) {
    ({ bucket: this.bucket, prefix: this.prefix } = parseS3Url(dest));
    this.location = `s3://${this.bucket}/${this.prefix}`;
    this.config = s3ClientConfig(env);
    this.threshold = options.multipartThreshold ?? MULTIPART_THRESHOLD;
    this.partSize = options.partSize ?? DEFAULT_PART_SIZE;
  }

  /** The SDK module (loaded on first use) and this destination's client. */
  private async connect(): Promise<{ client: S3Client; s3: Sdk }> {
    const s3 = await sdk();
    this.clientInstance ??= new s3.S3Client(this.config);
    return { client: this.clientInstance, s3 };
  }

  /** Uploads so far through this destination (multipart ones and their parts), for tests and stats. */
  readonly stats = { putObjects: 0, multipartUploads: 0, parts: 0, aborted: 0 };

  /**
   * Fails fast, before the conversion, when the endpoint is unreachable or the
   * bucket does not exist. A 403 is not fatal here: write-only credentials may
   * be refused HeadBucket yet allowed to PUT.
   */
  async prepare(): Promise<void> {
    const { client, s3 } = await this.connect();
    try {
      await client.send(new s3.HeadBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 403) return;
      if (status === 404) throw new ExportError('export-destination-failed', `bucket "${this.bucket}" does not exist (NoSuchBucket)`, { bucket: this.bucket }, { cause: err });
      throw err;
    }
  }

  private key(name: string): string {
    return `${this.prefix}${name}`;
  }

  async put(item: UploadItem, onProgress?: UploadProgress): Promise<string> {
    const Key = this.key(item.name);
    if (item.size <= this.threshold) {
      const { client, s3 } = await this.connect();
      await client.send(new s3.PutObjectCommand({ Bucket: this.bucket, Key, Body: createReadStream(item.path), ContentLength: item.size, ContentType: 'application/octet-stream' }));
      this.stats.putObjects++;
      onProgress?.(item.size, item.size);
    } else {
      await this.multipart(item, Key, onProgress);
    }
    return `s3://${this.bucket}/${Key}`;
  }

  /** CreateMultipartUpload, UploadPart (a few in parallel), Complete; Abort on any failure. */
  private async multipart(item: UploadItem, Key: string, onProgress?: UploadProgress): Promise<void> {
    const partSize = Math.max(this.partSize, Math.ceil(item.size / MAX_PARTS));
    const count = Math.ceil(item.size / partSize);
    const { client, s3 } = await this.connect();
    const created = await client.send(new s3.CreateMultipartUploadCommand({ Bucket: this.bucket, Key, ContentType: 'application/octet-stream' }));
    const UploadId = created.UploadId;
    if (!UploadId) throw new ExportError('export-destination-failed', `CreateMultipartUpload for ${Key} returned no UploadId`, { key: Key });
    const handle = await open(item.path, 'r');
    try {
      const parts: CompletedPart[] = new Array(count);
      let next = 0;
      let done = 0;
      let failure: { error: unknown } | undefined;
      // Workers stop taking parts after the first failure and are all waited for, so no part lands after the abort.
      const worker = async () => {
        while (next < count && !failure) {
          const i = next++;
          try {
            const length = Math.min(partSize, item.size - i * partSize);
            const body = Buffer.allocUnsafe(length);
            const { bytesRead } = await handle.read(body, 0, length, i * partSize);
            if (bytesRead !== length) throw new ExportError('export-source-changed', `${item.path} changed while uploading (short read)`, { path: item.path });
            const reply = await client.send(new s3.UploadPartCommand({ Bucket: this.bucket, Key, UploadId, PartNumber: i + 1, Body: body, ContentLength: length }));
            parts[i] = { PartNumber: i + 1, ETag: reply.ETag };
            this.stats.parts++;
            done += length;
            onProgress?.(done, item.size);
          } catch (error) {
            failure ??= { error };
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(PART_CONCURRENCY, count) }, worker));
      if (failure) throw failure.error;
      await client.send(new s3.CompleteMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId, MultipartUpload: { Parts: parts } }));
      this.stats.multipartUploads++;
    } catch (err) {
      this.stats.aborted++;
      await client.send(new s3.AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId })).catch(() => undefined);
      throw err;
    } finally {
      await handle.close();
    }
  }

  async remove(name: string): Promise<void> {
    const { client, s3 } = await this.connect();
    await client.send(new s3.DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(name) })).catch(() => undefined);
  }

  close(): void {
    this.clientInstance?.destroy();
  }
}

/**
 * S3-compatible object storage: s3://BUCKET/PREFIX. Endpoint from
 * AWS_ENDPOINT_URL or HOSTME_S3_ENDPOINT (path-style addressing), region
 * AWS_REGION (default us-east-1), credentials AWS_ACCESS_KEY_ID /
 * AWS_SECRET_ACCESS_KEY (else the SDK's default chain).
 */
export const s3Destination: DestinationKind = {
  name: 's3',
  example: 's3://bucket/prefix',
  matches: (dest) => /^s3:\/\//i.test(dest),
  open: (dest, env) => new S3Destination(dest, env),
};
