import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join, normalize, relative } from 'node:path';
import { writeFileAtomic } from '../node/dir-transport.js';

/**
 * Test helper: a tiny static file server over a directory (like any web
 * server or CDN a repository could be published on), whose misbehaviour can be
 * switched on per test. Behaviour fields may be changed while it runs.
 */
export interface StaticServerBehavior {
  /** Answer the next N requests with HTTP 500 (counts down). */
  failures?: number;
  /** Answer every request with HTTP 500. */
  alwaysFail?: boolean;
  /** Wait this long before answering each request. */
  delayMs?: number;
  /** Destroy the connection instead of answering. */
  drop?: boolean;
  /** Ignore Range headers: always 200 with the whole file. */
  ignoreRange?: boolean;
  /** For objects/…: serve the bytes of a different object under the requested name. */
  lie?: boolean;
  /** For objects/…: answer 404 as if the object were not there. */
  lackObjects?: boolean;
  /** Die after this many requests: every later connection is dropped (a server crash mid-boot). */
  dropAfter?: number;
  /** Die once this many requests matched `test` (e.g. objects of the disk, read only once the guest runs). */
  dropAfterMatching?: { test: (path: string) => boolean; count: number };
  /** Accept PUT (writes the file into the root). */
  writable?: boolean;
}

export interface RequestRecord {
  method: string;
  path: string;
  status: number;
  range?: string;
}

export class StaticServer {
  readonly requests: RequestRecord[] = [];
  private readonly sockets = new Set<Socket>();

  private constructor(
    readonly root: string,
    public behavior: StaticServerBehavior,
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(root: string, behavior: StaticServerBehavior = {}): Promise<StaticServer> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const { port } = server.address() as AddressInfo;
    const instance = new StaticServer(root, behavior, server, `http://127.0.0.1:${port}`);
    server.on('connection', (socket) => {
      instance.sockets.add(socket);
      socket.on('close', () => instance.sockets.delete(socket));
    });
    server.on('request', (req, res) => {
      instance.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(500);
        res.end(String(err));
      });
    });
    return instance;
  }

  /** Requests whose path starts with `prefix` (e.g. "objects/"). */
  count(prefix = '', method?: string): number {
    return this.requests.filter((r) => r.path.startsWith(prefix) && (method === undefined || r.method === method)).length;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const path = decodeURIComponent(url.pathname).replace(/^\/+/, '');
    const record: RequestRecord = { method: req.method ?? 'GET', path, status: 0, ...(req.headers.range ? { range: req.headers.range } : {}) };
    this.requests.push(record);
    const b = this.behavior;
    if (b.delayMs) await new Promise((resolve) => setTimeout(resolve, b.delayMs));
    const matched = b.dropAfterMatching ? this.requests.filter((r) => b.dropAfterMatching!.test(r.path)).length : 0;
    if (b.drop || (b.dropAfter !== undefined && this.requests.length > b.dropAfter) || (b.dropAfterMatching && matched > b.dropAfterMatching.count)) {
      record.status = -1;
      req.socket.destroy();
      return;
    }
    const reply = (status: number, body?: Uint8Array | string, headers: Record<string, string | number> = {}) => {
      record.status = status;
      res.writeHead(status, headers);
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (b.alwaysFail || (b.failures ?? 0) > 0) {
      if (b.failures) b.failures--;
      return reply(500, 'injected failure');
    }
    const file = normalize(join(this.root, path));
    if (relative(this.root, file).startsWith('..') || path.includes('\0')) return reply(400, 'bad path');

    if (req.method === 'PUT') {
      if (!b.writable) return reply(405, 'read-only server');
      const parts: Buffer[] = [];
      for await (const part of req) parts.push(part as Buffer);
      await writeFileAtomic(file, Buffer.concat(parts));
      return reply(201);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405);

    const isObject = path.startsWith('objects/');
    if (isObject && b.lackObjects) return reply(404, 'not found');
    let source = file;
    if (isObject && b.lie) source = (await this.otherObject(file)) ?? file;
    const info = await stat(source).catch(() => null);
    if (!info?.isFile()) return reply(404, 'not found');
    let data: Uint8Array = await readFile(source);
    if (isObject && b.lie && source === file) data = Buffer.from(data).reverse(); // no other object: still lie

    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range && !b.ignoreRange) {
      const start = Number(range[1]);
      const end = range[2] ? Math.min(Number(range[2]), data.length - 1) : data.length - 1;
      if (start >= data.length) return reply(416, undefined, { 'content-range': `bytes */${data.length}` });
      const slice = data.subarray(start, end + 1);
      return reply(206, slice, { 'content-length': slice.length, 'content-range': `bytes ${start}-${end}/${data.length}`, 'accept-ranges': 'bytes' });
    }
    return reply(200, data, { 'content-length': data.length, 'content-type': 'application/octet-stream' });
  }

  private async otherObject(file: string): Promise<string | null> {
    const objects = join(this.root, 'objects');
    const prefixes = (await readdir(objects).catch(() => [] as string[])).sort();
    for (const prefix of prefixes) {
      for (const name of (await readdir(join(objects, prefix)).catch(() => [] as string[])).sort()) {
        const candidate = join(objects, prefix, name);
        if (candidate !== file && !name.includes('.tmp-')) return candidate;
      }
    }
    return null;
  }
}
