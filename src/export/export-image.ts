import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { errorMessage } from '../errors.js';
import type { PublisherKey } from '../format/node/keys.js';
import { openRepository, type Repository } from '../repo/repository.js';
import { openDestination, type Destination } from './destinations/index.js';
import { prepareBootKit } from './boot-kit.js';
import { addBiosBootloader } from './bootloader.js';
import { ExportError } from './errors.js';
import { exportFormat, type ExportedFile, type FormatOptions } from './formats/index.js';
import { checkSiteReference, type SiteReference } from './iso.js';
import { defaultBuildCacheDir } from '../build/build-image.js';
import { staticBusybox } from '../build/boot.js';
import { debianArch } from '../build/debian.js';
import { sha256File } from './hash.js';
import { materializeDisk } from './materialize.js';

export interface ExportOptions {
  /** Repository directory or URL, or an opened repository. */
  repo: string | Repository;
  name: string;
  version?: string;
  /** One of EXPORT_FORMATS' names. */
  format: string;
  /** Local directory, http(s):// base URL, or s3://bucket/prefix. */
  to: string;
  /** Or an already opened destination (tests, embedding). */
  destination?: Destination;
  trusted?: PublisherKey[];
  compress?: boolean;
  provider?: 'libvirt' | 'virtualbox';
  /** Parent of the temporary work directory (default: the local destination, else the OS temp dir). */
  workDir?: string;
  env?: NodeJS.ProcessEnv;
  /**
   * Direct-boot images: write a BIOS bootloader (syslinux) with the image's
   * kernel, initrd and command line into the exported disk (default true).
   */
  bootloader?: boolean;
  /** Debian package cache for matching an ELF kernel to its bzImage and modules (default: hostme build's cache). */
  cacheDir?: string;
  /** iso: the website reference written into the ISO (default: the repository URL's /i/NAME page when the repository is a URL). */
  site?: SiteReference;
  onProgress?: (event: ExportProgress) => void;
  /** Called with the temporary work directory once created (the CLI removes it on SIGINT). */
  onWorkDir?: (dir: string | undefined) => void;
}

export type ExportProgress =
  | { phase: 'materialize'; done: number; total: number }
  | { phase: 'convert'; step: string }
  | { phase: 'upload'; file: string; done: number; total: number };

export interface ExportedFileSummary {
  name: string;
  size: number;
  sha256: string;
  /** Where it ended up: a path, an http(s) URL or an s3:// URL. */
  url: string;
}

export interface ExportResult {
  image: string;
  digest: string;
  format: string;
  destination: string;
  diskSize: number;
  /** How the exported disk boots without -kernel: 'syslinux' (written by this export), 'firmware' (the image's own), 'none' (--no-bootloader). */
  boot: 'syslinux' | 'firmware' | 'none';
  files: ExportedFileSummary[];
  seconds: number;
}

/**
 * Export disk 0 of a published image: materialize it as a sparse raw file
 * from verified chunks, let the format writer convert/package it, and hand
 * the files to the destination. On any failure nothing of this export is
 * left behind: the work directory is deleted, and files already stored at
 * the destination are removed.
 */
export async function exportImage(options: ExportOptions): Promise<ExportResult> {
  const started = performance.now();
  const env = options.env ?? process.env;
  const format = exportFormat(options.format);
  if (options.provider && format.name !== 'vagrant') throw new ExportError('usage', '--provider applies only to --format vagrant');
  if (options.provider && options.provider !== 'libvirt' && options.provider !== 'virtualbox') {
    throw new ExportError('usage', `unknown Vagrant provider "${String(options.provider)}"; valid providers: libvirt, virtualbox`);
  }
  if (options.compress && format.name !== 'qcow2') throw new ExportError('usage', '--compress applies only to --format qcow2');
  const destination = options.destination ?? openDestination(options.to, env);
  const repo = typeof options.repo === 'string' ? openRepository(options.repo) : options.repo;
  let workDir: string | undefined;
  try {
    const image = await repo.loadImage(options.name, options.version, { trusted: options.trusted });
    const { manifest } = image;
    await destination.prepare?.().catch((err: unknown) => {
      throw destinationError(destination, err);
    });
    workDir = await mkdtemp(join(options.workDir ?? destination.workDirParent ?? tmpdir(), '.hostme-export-'));
    options.onWorkDir?.(workDir);
    const rawPath = join(workDir, 'disk0.raw');
    await materializeDisk(repo, image, rawPath, { onProgress: (done, total) => options.onProgress?.({ phase: 'materialize', done, total }) });
    let bootVia: ExportResult['boot'] = manifest.boot.mode === 'firmware' ? 'firmware' : 'none';
    let iso: FormatOptions['iso'];
    if (format.name === 'iso' && manifest.boot.mode === 'direct') {
      const site = options.site ?? defaultSite(typeof options.repo === 'string' ? options.repo : repo.location, manifest.name);
      checkSiteReference(site);
      options.onProgress?.({ phase: 'convert', step: 'matching the kernel to its Debian package (bzImage, modules)' });
      const cacheDir = options.cacheDir ?? defaultBuildCacheDir();
      const boot = (await prepareBootKit(repo, image, workDir, { cacheDir, modules: true }))!;
      const busybox = await staticBusybox('busybox-static', cacheDir, debianArch(manifest.hardware.arch), () => {});
      iso = { boot, busybox, site, digest: image.digest };
      bootVia = 'syslinux';
    } else if (manifest.boot.mode === 'direct' && options.bootloader !== false) {
      options.onProgress?.({ phase: 'convert', step: 'writing a BIOS bootloader (syslinux) with the kernel' });
      const kit = await prepareBootKit(repo, image, workDir, { cacheDir: options.cacheDir });
      await addBiosBootloader(rawPath, kit!, image.digest.slice(0, 8));
      bootVia = 'syslinux';
    }
    const diskSize = (await stat(rawPath)).size;
    const baseName = `${manifest.name}-${manifest.version}`;
    const files = await format.write(rawPath, manifest, workDir, {
      baseName,
      compress: options.compress,
      provider: options.provider,
      iso,
      onStep: (step) => options.onProgress?.({ phase: 'convert', step }),
    });
    const summaries = await storeFiles(destination, files, options.onProgress);
    return {
      image: `${manifest.name}@${manifest.version}`,
      digest: image.digest,
      format: format.name,
      destination: destination.location,
      diskSize,
      boot: bootVia,
      files: summaries,
      seconds: Math.round((performance.now() - started) / 100) / 10,
    };
  } finally {
    if (workDir) await rm(workDir, { recursive: true, force: true });
    options.onWorkDir?.(undefined);
    destination.close?.();
  }
}

/** The reference an ISO carries when none is given: the repository's landing page, when it is served over http(s). */
function defaultSite(repoLocation: string, name: string): SiteReference {
  if (!/^https?:\/\//i.test(repoLocation)) {
    throw new ExportError('usage', 'an ISO carries the website reference: give --site-link URL (the repository is a local directory, so there is no web address to default to)');
  }
  const hub = repoLocation.replace(/\/+$/, '');
  return { link: `${hub}/i/${name}`, hub };
}

/**
 * Hands files to a destination one after the other. If one fails, the ones
 * already stored are removed again, so the destination holds all of this
 * export or none of it; the error names the destination, file and reason.
 */
export async function storeFiles(destination: Destination, files: ExportedFile[], onProgress?: (event: ExportProgress) => void): Promise<ExportedFileSummary[]> {
  const summaries: ExportedFileSummary[] = [];
  try {
    for (const file of files) {
      const { size } = await stat(file.path);
      const sha256 = await sha256File(file.path);
      const url = await destination
        .put({ name: file.name, path: file.path, size }, (done, total) => onProgress?.({ phase: 'upload', file: file.name, done, total }))
        .catch((err: unknown) => {
          throw destinationError(destination, err, file.name);
        });
      summaries.push({ name: file.name, size, sha256, url });
    }
    return summaries;
  } catch (err) {
    for (const stored of summaries) await destination.remove(stored.name).catch(() => undefined);
    throw err;
  }
}

function destinationError(destination: Destination, err: unknown, file?: string): ExportError {
  if (err instanceof ExportError) return err;
  const cause = err as { name?: string; code?: string; $metadata?: { httpStatusCode?: number } };
  const status = cause.$metadata?.httpStatusCode;
  const reason = [cause.code && !errorMessage(err).includes(cause.code) ? cause.code : undefined, errorMessage(err) || cause.name, status ? `(HTTP ${status})` : undefined]
    .filter(Boolean)
    .join(' ');
  return new ExportError(
    'export-destination-failed',
    `export to ${destination.location} failed${file ? ` while storing ${file}` : ''}: ${reason}; nothing was left at the destination`,
    { destination: destination.location, file, reason },
    { cause: err },
  );
}
