import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { realpathSync, statSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { HostmeError, errorMessage, isHostmeError } from '../errors.js';
import { handleApi } from './api.js';
import { CORS_ALLOW_HEADERS, CORS_ALLOW_METHODS, CORS_MAX_AGE, HttpError, sendJsonError, setCommonHeaders } from './http-util.js';
import { handleImagePage, handleIndexPage, handleReferenceFile } from './landing-page.js';
import { IsoService, type IsoServiceOptions } from './iso-service.js';
import { RepoView } from './repo-view.js';
import { parseRequestPath } from './request-path.js';
import { handleWebRoute } from './run-page.js';
import { EtagCache, SmallFileCache, serveFile, serveFromMemory } from './static-files.js';
import { HotObjects } from './hot-objects.js';
import { upgradeRoutes } from './upgrades.js';
import { DEFAULT_MAX_OBJECT_CONTENT_BYTES, DEFAULT_MAX_UPLOAD_BYTES, handleUpload } from './upload.js';

/** One finished (or abandoned) request. */
export interface RequestLogEntry {
  method: string;
  /** Request target as received (truncated to 256 characters). */
  url: string;
  status: number;
  /** Body bytes sent (the Content-Length of a completed response; 0 for HEAD and aborted ones). */
  bytes: number;
  ms: number;
  remote?: string;
  /** The client went away before the response was complete. */
  aborted: boolean;
  /** For 5xx: what went wrong. */
  error?: string;
}

export type RepoServerLogger = (entry: RequestLogEntry) => void;

export interface RepoServerOptions {
  /** The repository directory to serve (must exist). */
  repoDir: string;
  /** Enables publishing: PUT needs "Authorization: Bearer <token>". Without it the server is read-only. */
  token?: string;
  /** Largest accepted PUT body (default 64 MiB). */
  maxUploadBytes?: number;
  /** Largest uncompressed content of an uploaded zstd object (default 1 GiB; hashed while streaming, never held in memory). */
  maxObjectContentBytes?: number;
  logger?: RepoServerLogger;
  /** Memory for hot immutable objects (default 64 MiB; objects up to 4 MiB are kept). */
  hotObjectBytes?: number;
  /** The render service (hostme serve --render): handles /api/builds. */
  render?: { handle(req: IncomingMessage, res: ServerResponse, segments: string[]): Promise<boolean> };
  /** The hub (hostme serve --hub): gateway /s/…, Host-header sites, /api/hub/… and the node tunnels (upgrade). */
  hub?: {
    handleRequest(req: IncomingMessage, res: ServerResponse): boolean;
    handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean;
    /** Whether the run page of NAME joins the image's WebRTC swarm (docs/peers.md "Browser peers"). */
    publicSwarm?(name: string): Promise<boolean>;
  };
  /** Generate and offer each direct-boot image's ISO and its torrent (/i/NAME/NAME.iso[.torrent]). */
  iso?: IsoServiceOptions;
}

export interface StartRepoServerOptions extends RepoServerOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: any free port. */
  port?: number;
}

export interface RunningRepoServer {
  /** Base URL, e.g. http://127.0.0.1:8080 (no trailing slash). */
  url: string;
  server: Server;
  close(): Promise<void>;
}

const ALLOWED_METHODS = new Set(['GET', 'HEAD', 'PUT', 'POST', 'OPTIONS']);

/**
 * An HTTP server for a hostme repository directory: the static files with
 * proper caching, ranges and CORS; a small JSON API and HTML landing pages;
 * and, when a token is configured, authenticated, validated publishing.
 */
export function createRepoServer(options: RepoServerOptions): Server {
  const rootReal = realpathSync(options.repoDir);
  if (!statSync(rootReal).isDirectory()) throw new HostmeError('usage', `${options.repoDir} is not a directory`, { repoDir: options.repoDir });
  const view = new RepoView(rootReal);
  const etags = new EtagCache();
  const small = new SmallFileCache();
  const hot = new HotObjects(options.hotObjectBytes);
  const upload = {
    rootReal,
    token: options.token,
    maxUploadBytes: options.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES,
    maxObjectContentBytes: options.maxObjectContentBytes ?? DEFAULT_MAX_OBJECT_CONTENT_BYTES,
  };
  if (upload.token !== undefined && upload.token.length === 0) throw new HostmeError('usage', 'the upload token must not be empty');

  const iso = options.iso ? new IsoService(options.iso) : undefined;
  const server = createServer();
  const fallbackHost = (): string => {
    const address = server.address() as AddressInfo | null;
    if (!address) return 'localhost';
    return address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
  };

  const route = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? 'GET';
    if (!ALLOWED_METHODS.has(method)) throw new HttpError(405, 'method-not-allowed', `${method} is not supported`, { Allow: CORS_ALLOW_METHODS });
    if (method === 'OPTIONS') {
      res.statusCode = 204;
      res.setHeader('Allow', CORS_ALLOW_METHODS);
      res.setHeader('Access-Control-Allow-Methods', CORS_ALLOW_METHODS);
      res.setHeader('Access-Control-Allow-Headers', CORS_ALLOW_HEADERS);
      res.setHeader('Access-Control-Max-Age', CORS_MAX_AGE);
      res.end();
      return;
    }
    const { segments } = parseRequestPath(req.url);
    // The hot path: immutable objects, straight to the file server (memory after the first read).
    if ((method === 'GET' || method === 'HEAD') && (segments[0] === 'objects' || segments[0] === 'manifests')) {
      await serveFile(req, res, rootReal, segments, etags, hot, small);
      return;
    }
    if (options.render && (await options.render.handle(req, res, segments))) return;
    if (method === 'POST') throw new HttpError(405, 'method-not-allowed', 'POST is only accepted by the render service (/api/builds)', { Allow: CORS_ALLOW_METHODS });
    if (method === 'PUT') {
      await handleUpload(req, res, segments, upload);
      return;
    }
    if (await handleWebRoute(req, res, segments, view, fallbackHost(), options.hub?.publicSwarm?.bind(options.hub))) return;
    if (segments.length === 1 && segments[0] === '') {
      await handleIndexPage(req, res, view);
    } else if (segments[0] === 'api') {
      await handleApi(req, res, segments.slice(1), view, fallbackHost());
    } else if (segments[0] === 'r') {
      await handleReferenceFile(req, res, segments.slice(1), view, fallbackHost());
    } else if (segments[0] === 'i') {
      if (iso && (await iso.handle(req, res, segments.slice(1), view, fallbackHost()))) return;
      await handleImagePage(req, res, segments.slice(1), view, fallbackHost(), Boolean(iso));
    } else {
      await serveFile(req, res, rootReal, segments, etags, hot, small);
    }
  };

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const started = performance.now();
    const remote = req.socket.remoteAddress;
    let failure: string | undefined;
    /** Body bytes of an answer from the memory fast path (its headers are not readable back). */
    let fastBytes: number | undefined = undefined;
    const logger = options.logger;
    if (logger) res.on('close', () => {
      try {
        logger({
          method: req.method ?? '',
          url: (req.url ?? '').slice(0, 256),
          status: res.statusCode,
          bytes: res.writableFinished && req.method !== 'HEAD' ? (fastBytes ?? Number(res.getHeader('content-length') ?? 0)) : 0,
          ms: performance.now() - started,
          remote,
          aborted: !res.writableFinished,
          ...(failure ? { error: failure } : {}),
        });
      } catch {
        // A broken logger must not take the server down.
      }
    });
    // The gateway answers every method and sets its own headers.
    if (options.hub?.handleRequest(req, res)) return;
    fastBytes = serveFromMemory(req, res, rootReal, hot, small);
    if (fastBytes !== undefined) return;
    setCommonHeaders(res);
    route(req, res).catch((err: unknown) => {
      if (!(err instanceof HttpError)) failure = errorMessage(err);
      if (res.headersSent || res.destroyed || !res.socket || res.socket.destroyed) {
        res.destroy();
        return;
      }
      try {
        if (err instanceof HttpError) {
          sendJsonError(req, res, err.status, err.code, err.message, err.headers);
        } else if (isHostmeError(err)) {
          sendJsonError(req, res, 500, err.code, err.message);
        } else {
          sendJsonError(req, res, 500, 'internal-error', 'internal server error');
        }
      } catch {
        res.destroy();
      }
    });
  });
  // The network hub (hostme serve --net, net/hub.ts) adds its /net/ handler to the same list.
  const hub = options.hub;
  if (hub) upgradeRoutes(server).add((req, socket, head) => hub.handleUpgrade(req, socket, head));
  // Expect: 100-continue is answered by the upload handler once auth and size checks pass.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => server.emit('request', req, res));
  return server;
}

/** Create and listen; resolves once the port is bound. */
export async function startRepoServer(options: StartRepoServerOptions): Promise<RunningRepoServer> {
  const server = createRepoServer(options);
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const hostPart = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${hostPart}:${address.port}`,
    server,
    close: () =>
      new Promise<void>((resolve, reject) => {
        const force = setTimeout(() => server.closeAllConnections(), 2000);
        force.unref();
        server.close((err) => {
          clearTimeout(force);
          if (err) reject(err);
          else resolve();
        });
        // Idle keep-alive connections would hold close() open; in-flight requests get
        // 2 s to finish, then are cut: a client that never finishes reading (seen: a
        // browser's fetch left open after its page closed) must not hold shutdown forever.
        server.closeIdleConnections();
      }),
  };
}
