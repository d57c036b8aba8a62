import type { PublisherKey } from '../format/node/keys.js';
import { HostmeError } from '../errors.js';
import { openRepository } from '../repo/repository.js';
import { publishDerived } from '../repo/versions.js';
import type { Accel } from '../vm/accel.js';
import { startImage } from './run-image.js';

/** Boot an image of a local repository once, until a ready point, and publish a version derived from it (profile, snapshot). */
export interface BootOnceRequest {
  repoDir: string;
  name: string;
  /** The version to boot (default: latest). */
  version?: string;
  /** Version to publish (default: next integer). */
  newVersion?: string;
  key: PublisherKey;
  until: RegExp;
  timeoutMs?: number;
}

export interface ProfileRequest extends BootOnceRequest {
  cacheDir?: string;
  accel?: Accel;
}

export interface ProfileResult {
  name: string;
  baseVersion: string;
  version: string;
  chunks: number;
  bytes: number;
  msToReady: number | null;
  manifestDigest: string;
}

/**
 * Boot the image once from its repository on a throwaway overlay, record the
 * chunks the guest reads until the ready point, in order, and publish them as
 * the prefetch list of a new signed version.
 */
export async function profileImage(request: ProfileRequest): Promise<ProfileResult> {
  const order: Array<[number, number]> = [];
  const running = await startImage({
    link: { repo: request.repoDir, name: request.name, version: request.version },
    cacheDir: request.cacheDir,
    console: 'none',
    until: request.until,
    timeoutMs: request.timeoutMs,
    overlay: 'ephemeral',
    trusted: [request.key],
    accel: request.accel,
    onFirstAccess: (disk, chunk) => order.push([disk, chunk]),
  });
  const result = await running.finished;
  if (result.readyError || result.stats.msToReady === null) {
    throw new HostmeError('profile-failed', `the guest never printed a match for ${request.until} (QEMU exit ${result.exit.code ?? result.exit.signal}); nothing was published`);
  }
  const base = running.manifest;
  const repo = openRepository(request.repoDir);
  const published = await publishDerived(repo, { manifest: base, digest: running.digest }, { prefetch: order }, request.key, request.newVersion);
  const version = published.manifest.version;
  const bytes = order.reduce((sum, [disk, chunk]) => {
    const device = running.devices[disk]!;
    return sum + Math.min(device.chunkSize, device.size - chunk * device.chunkSize);
  }, 0);
  return { name: request.name, baseVersion: base.version, version, chunks: order.length, bytes, msToReady: result.stats.msToReady, manifestDigest: published.digest };
}
