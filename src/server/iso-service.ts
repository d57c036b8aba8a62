/**
 * The hub's ISO and torrent (docs/server.md "ISO and torrent"):
 *   GET /i/NAME/NAME.iso                  the latest version's ISO
 *   GET /i/NAME/VERSION/NAME.iso          one version's
 *   GET /i/NAME[/VERSION]/NAME.iso.torrent  BitTorrent metainfo, web seed = the pinned .iso URL
 * ISOs are generated on first request (hostme export --format iso) and cached
 * under the cache directory by manifest digest + website reference. The
 * reference comes from the operator (--public-url, else the address the
 * server listens on), never from a request header, so requests cannot make
 * the server build more ISOs than there are image versions. One generation
 * runs at a time; at most `maxEntries` ISOs are kept (least recently used go).
 */
import { createHash } from 'node:crypto';
import { mkdirSync, realpathSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { HostmeError, isHostmeError } from '../errors.js';
import { ISO_LAYOUT, type SiteReference } from '../export/iso.js';
import type { LoadedImage } from '../repo/repository.js';
import { makeTorrent } from '../torrent/metainfo.js';
import { HttpError } from './http-util.js';
import type { RepoView } from './repo-view.js';
import { EtagCache, serveFile } from './static-files.js';

export interface IsoServiceOptions {
  /** Where generated ISOs and torrents are kept (a dot-directory of the repository is never served as a file). */
  cacheDir: string;
  /** The hub's public base URL (http(s)://host[:port]); default: the server's listening address. */
  publicUrl?: string;
  /** Debian package cache for kernel packages and busybox-static (default: hostme build's). */
  debCache?: string;
  /** ISOs kept (default 8). */
  maxEntries?: number;
}

interface Built {
  iso: string;
  torrent: string;
}

const ISO_ROUTE = /^[a-z0-9][a-z0-9._-]{0,63}\.iso(\.torrent)?$/;

export class IsoService {
  private readonly building = new Map<string, Promise<Built>>();
  private queue: Promise<unknown> = Promise.resolve();
  private readonly etags = new EtagCache();

  private readonly options: IsoServiceOptions;

  constructor(options: IsoServiceOptions) {
    if (options.publicUrl !== undefined && !/^https?:\/\/[^/?#\s]+$/i.test(options.publicUrl.replace(/\/+$/, ''))) {
      throw new HostmeError('usage', `--public-url must be http(s)://HOST[:PORT], not "${options.publicUrl}"`);
    }
    mkdirSync(options.cacheDir, { recursive: true });
    // serveFile confines reads to a real (symlink-free) root.
    this.options = { ...options, cacheDir: realpathSync(options.cacheDir) };
  }

  /** The ISO's file name for an image, and whether a request is for one of this service's files. */
  static route(segments: string[]): { name: string; version?: string; torrent: boolean } | undefined {
    if (segments.length < 2 || segments.length > 3) return undefined;
    const file = segments[segments.length - 1]!;
    const m = ISO_ROUTE.exec(file);
    if (!m || !file.startsWith(`${segments[0]}.iso`)) return undefined;
    return { name: segments[0]!, version: segments.length === 3 ? segments[1] : undefined, torrent: m[1] !== undefined };
  }

  /** Serves GET/HEAD of an ISO route (`segments` follow "i"). */
  async handle(req: IncomingMessage, res: ServerResponse, segments: string[], view: RepoView, fallbackHost: string): Promise<boolean> {
    const route = IsoService.route(segments);
    if (!route) return false;
    const { image } = await view.image(route.name, route.version);
    if (image.manifest.boot.mode !== 'direct') {
      throw new HttpError(404, 'no-iso', `${route.name}@${image.manifest.version} boots through its firmware from its disk: there is no ISO of it (the ISO needs a direct-boot image)`);
    }
    const base = (this.options.publicUrl ?? `http://${fallbackHost}`).replace(/\/+$/, '');
    const built = await this.built(view, image, base);
    const fileName = `${route.name}-${image.manifest.version}.iso${route.torrent ? '.torrent' : ''}`;
    res.setHeader('Content-Disposition', `attachment; filename="${fileName}"`);
    if (route.torrent) {
      const body = await readFile(built.torrent);
      res.statusCode = 200;
      res.setHeader('Content-Type', 'application/x-bittorrent');
      res.setHeader('Content-Length', body.length);
      res.setHeader('Cache-Control', 'no-cache');
      res.end(req.method === 'HEAD' ? undefined : body);
      return true;
    }
    const [dir, file] = [this.options.cacheDir, built.iso.slice(this.options.cacheDir.length + 1)];
    await utimes(built.iso, new Date(), (await stat(built.iso)).mtime).catch(() => {});
    await serveFile(req, res, dir, [file], this.etags);
    return true;
  }

  private async built(view: RepoView, image: LoadedImage, base: string): Promise<Built> {
    const { name, version } = image.manifest;
    const site: SiteReference = { link: `${base}/i/${name}`, hub: base };
    const key = createHash('sha256').update(`${image.digest}\n${JSON.stringify(site)}\nlayout ${ISO_LAYOUT}`).digest('hex').slice(0, 40);
    const built = { iso: join(this.options.cacheDir, `${key}.iso`), torrent: join(this.options.cacheDir, `${key}.torrent`) };
    if (await stat(built.torrent).then(() => true, () => false)) return built;
    let pending = this.building.get(key);
    if (!pending) {
      const webSeed = `${base}/i/${encodeURIComponent(name)}/${encodeURIComponent(version)}/${encodeURIComponent(name)}.iso`;
      pending = this.enqueue(() => this.generate(view, image, site, webSeed, built)).finally(() => this.building.delete(key));
      this.building.set(key, pending);
    }
    return pending;
  }

  private enqueue<T>(job: () => Promise<T>): Promise<T> {
    const next = this.queue.then(job, job);
    this.queue = next.catch(() => {});
    return next;
  }

  private async generate(view: RepoView, image: LoadedImage, site: SiteReference, webSeed: string, built: Built): Promise<Built> {
    await mkdir(this.options.cacheDir, { recursive: true });
    const work = join(this.options.cacheDir, `.build-${process.pid}-${Date.now()}`);
    await mkdir(work);
    try {
      // Loaded on first use: the exporter pulls in the build tools.
      const { exportImage } = await import('../export/export-image.js');
      const result = await exportImage({ repo: view.repo, name: image.manifest.name, version: image.manifest.version, format: 'iso', to: work, workDir: work, site, cacheDir: this.options.debCache }).catch((err: unknown) => {
        throw new HttpError(503, isHostmeError(err) ? err.code : 'iso-failed', `the ISO of ${image.manifest.name}@${image.manifest.version} could not be generated: ${(err as Error).message}`);
      });
      const iso = result.files[0]!.url;
      const torrent = await makeTorrent(iso, { name: `${image.manifest.name}-${image.manifest.version}.iso`, webSeeds: [webSeed], comment: `${site.link} (manifest ${image.digest})` });
      await rename(iso, built.iso);
      await writeFile(`${built.torrent}.tmp`, torrent.torrent);
      await rename(`${built.torrent}.tmp`, built.torrent);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
    await this.evict();
    return built;
  }

  /** Keeps the `maxEntries` most recently served ISOs (their torrents go with them). */
  private async evict(): Promise<void> {
    const names = (await readdir(this.options.cacheDir)).filter((n) => n.endsWith('.iso'));
    const max = this.options.maxEntries ?? 8;
    if (names.length <= max) return;
    const aged = await Promise.all(names.map(async (n) => ({ n, at: (await stat(join(this.options.cacheDir, n))).atimeMs })));
    aged.sort((a, b) => b.at - a.at);
    for (const { n } of aged.slice(max)) {
      await rm(join(this.options.cacheDir, n), { force: true });
      await rm(join(this.options.cacheDir, n.replace(/\.iso$/, '.torrent')), { force: true });
    }
  }
}
