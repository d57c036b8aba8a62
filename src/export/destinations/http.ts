import { createReadStream } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { Destination, DestinationKind, UploadItem, UploadProgress } from './types.js';
import { ExportError } from '../errors.js';

interface HttpReply {
  status: number;
  body: string;
}

function request(url: URL, method: string, headers: Record<string, string>, body?: { path: string; size: number; onProgress?: UploadProgress }): Promise<HttpReply> {
  const lib = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(url, { method, headers: { ...headers, ...(body ? { 'content-length': String(body.size), 'content-type': 'application/octet-stream' } : {}) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        if (text.length < 4096) text += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(120_000, () => req.destroy(new Error(`no response from ${url.host} for 120 s`)));
    if (!body) return void req.end();
    let sent = 0;
    const stream = createReadStream(body.path, { highWaterMark: 1 << 20 });
    stream.on('data', (chunk) => {
      sent += chunk.length;
      body.onProgress?.(sent, body.size);
    });
    stream.on('error', (err) => req.destroy(err));
    stream.pipe(req);
  });
}

class HttpDestination implements Destination {
  readonly kind = 'http';
  readonly location: string;
  private readonly base: URL;
  private readonly headers: Record<string, string>;

  constructor(dest: string, token?: string) {
    this.base = new URL(dest.endsWith('/') ? dest : `${dest}/`);
    this.location = this.base.href;
    this.headers = token ? { authorization: `Bearer ${token}` } : {};
  }

  private urlFor(name: string): URL {
    return new URL(encodeURIComponent(name), this.base);
  }

  async put(item: UploadItem, onProgress?: UploadProgress): Promise<string> {
    const url = this.urlFor(item.name);
    const reply = await request(url, 'PUT', this.headers, { path: item.path, size: item.size, onProgress });
    if (reply.status < 200 || reply.status >= 300) {
      const detail = reply.body.trim().split('\n')[0]?.slice(0, 200);
      throw new ExportError('export-destination-failed', `PUT ${url.href} answered HTTP ${reply.status}${detail ? `: ${detail}` : ''}`, { url: url.href, status: reply.status });
    }
    return url.href;
  }

  async remove(name: string): Promise<void> {
    await request(this.urlFor(name), 'DELETE', this.headers).catch(() => undefined);
  }
}

/** HTTP(S) PUT of each file under a base URL; bearer token from HOSTME_EXPORT_TOKEN. */
export const httpDestination: DestinationKind = {
  name: 'http',
  example: 'https://uploads.example.org/images/',
  matches: (dest) => /^https?:\/\//i.test(dest),
  open: (dest, env) => new HttpDestination(dest, env.HOSTME_EXPORT_TOKEN || undefined),
};
