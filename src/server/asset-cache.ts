import type { IncomingMessage, ServerResponse } from 'node:http';
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { brotliCompress, constants as zlib, gzip } from 'node:zlib';
import { etagMatchesAny } from './range.js';

const brotli = promisify(brotliCompress);
const gzipAsync = promisify(gzip);

type Encoding = 'br' | 'gzip' | 'identity';

interface Asset {
  /** mtime + size of the file the variants were made from. */
  key: string;
  tag: string;
  variants: Map<Encoding, Promise<Buffer>>;
  identity: Buffer;
}

/**
 * The run page's static files (v86's 2 MiB of WebAssembly, the bundle, the
 * BIOS), held in memory with a content ETag and compressed variants made
 * once: a first visit over a slow link moves about a third of the bytes, and
 * a revisit revalidates with a 304 instead of downloading them again.
 */
export class AssetCache {
  private readonly assets = new Map<string, Promise<Asset>>();

  async send(req: IncomingMessage, res: ServerResponse, file: string, type: string): Promise<void> {
    const asset = await this.load(file);
    const encoding = chooseEncoding(req.headers['accept-encoding']);
    const etag = `"${asset.tag}${encoding === 'identity' ? '' : `-${encoding}`}"`;
    res.setHeader('Content-Type', type);
    res.setHeader('Cache-Control', 'no-cache');
    res.setHeader('Vary', 'Accept-Encoding');
    res.setHeader('ETag', etag);
    if (etagMatchesAny(req.headers['if-none-match'], etag)) {
      res.statusCode = 304;
      res.end();
      return;
    }
    const body = encoding === 'identity' ? asset.identity : await this.variant(asset, encoding);
    if (encoding !== 'identity') res.setHeader('Content-Encoding', encoding);
    res.statusCode = 200;
    res.setHeader('Content-Length', body.length);
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  private async load(file: string): Promise<Asset> {
    const info = await stat(file);
    const key = `${info.mtimeMs}:${info.size}`;
    const cached = this.assets.get(file);
    if (cached) {
      const asset = await cached;
      if (asset.key === key) return asset;
    }
    const loading = readFile(file).then((identity) => ({
      key,
      tag: createHash('sha256').update(identity).digest('hex').slice(0, 32),
      variants: new Map<Encoding, Promise<Buffer>>(),
      identity,
    }));
    this.assets.set(file, loading);
    loading.catch(() => this.assets.delete(file));
    return loading;
  }

  private variant(asset: Asset, encoding: 'br' | 'gzip'): Promise<Buffer> {
    let made = asset.variants.get(encoding);
    if (!made) {
      // Quality 9, not 11: about as small for these files, made in a fraction of the time.
      made = encoding === 'br' ? brotli(asset.identity, { params: { [zlib.BROTLI_PARAM_QUALITY]: 9 } }) : gzipAsync(asset.identity, { level: 9 });
      asset.variants.set(encoding, made);
    }
    return made;
  }
}

function chooseEncoding(header: string | string[] | undefined): Encoding {
  const accepted = (Array.isArray(header) ? header.join(',') : (header ?? ''))
    .split(',')
    .map((part) => part.trim().split(';'))
    .filter(([, q]) => !q || !/^\s*q\s*=\s*0(\.0*)?\s*$/.test(q))
    .map(([name]) => name!.trim().toLowerCase());
  if (accepted.includes('br')) return 'br';
  if (accepted.includes('gzip')) return 'gzip';
  return 'identity';
}
