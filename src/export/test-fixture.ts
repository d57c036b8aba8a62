/** Shared by the export tests: a small image (the 64 MiB reference disk + kernel) packed into a temporary repository. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createKeyFiles, loadPrivateKey } from '../pack/publisher-key.js';
import { packImage } from '../pack/pack-image.js';
import { openRepository } from '../repo/repository.js';
import { loadReferenceGuest, type ReferenceGuest } from '../testing/reference-guest.js';

export interface SmallImage {
  guest: ReferenceGuest;
  dir: string;
  repoDir: string;
  name: string;
  version: string;
  cleanup(): Promise<void>;
}

export async function packSmallImage(): Promise<SmallImage> {
  const guest = loadReferenceGuest();
  const dir = await mkdtemp(join(tmpdir(), 'hostme-export-test-'));
  const repoDir = join(dir, 'repo');
  const keyFile = join(dir, 'publisher.key');
  await createKeyFiles(keyFile);
  await packImage({
    repo: openRepository(repoDir),
    workDir: dir,
    disk: guest.disk,
    name: 'small',
    version: '1',
    key: await loadPrivateKey(keyFile),
    kernel: guest.kernel,
    cmdline: guest.cmdline,
    memoryMiB: guest.memoryMiB,
    cpus: guest.cpus,
    description: 'reference guest, 64 MiB disk <test & "quotes">',
  });
  return { guest, dir, repoDir, name: 'small', version: '1', cleanup: () => rm(dir, { recursive: true, force: true }) };
}
