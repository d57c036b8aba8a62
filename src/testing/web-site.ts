import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildImage } from '../build/index.js';
import { createKeyFiles, loadPrivateKey } from '../pack/publisher-key.js';

const repoRoot = resolve(fileURLToPath(new URL('../..', import.meta.url)));

export interface PublishedWebSite {
  /** Repository holding web@1 (examples/web). Tests must not modify it. */
  repoDir: string;
  /** The hostname the guest was built with; its page says "served by guest HOSTNAME". */
  guestHostname: string;
}

export const WEB_GUEST_HOSTNAME = 'web-guest';

async function filesDigest(dir: string, hash = createHash('sha256')): Promise<ReturnType<typeof createHash>> {
  for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const path = join(dir, entry.name);
    hash.update(path);
    if (entry.isDirectory()) await filesDigest(path, hash);
    else if (entry.isFile()) hash.update(await readFile(path));
  }
  return hash;
}

/**
 * examples/web built once (`hostme build`, Debian packages from .cache/build)
 * into <repo>/.cache/published-web and reused by every hosting test while
 * the example's sources are unchanged.
 */
export async function publishedWebSite(): Promise<PublishedWebSite> {
  const base = join(repoRoot, '.cache', 'published-web');
  const repoDir = join(base, 'repo');
  const stamp = (await filesDigest(join(repoRoot, 'examples', 'web'), await filesDigest(join(repoRoot, 'examples', 'hello')))).digest('hex');
  if ((await readFile(join(base, 'done'), 'utf8').catch(() => '')) !== stamp) {
    await rm(base, { recursive: true, force: true });
    await mkdir(base, { recursive: true });
    const keyFile = join(base, 'publisher.key');
    await createKeyFiles(keyFile);
    await buildImage({
      manifestPath: join(repoRoot, 'examples', 'web', 'hostme.json'),
      inputs: { hostname: WEB_GUEST_HOSTNAME, title: `served by guest ${WEB_GUEST_HOSTNAME}` },
      repoDir,
      key: await loadPrivateKey(keyFile),
      cacheDir: join(repoRoot, '.cache', 'build'),
      workDir: base,
    });
    await writeFile(join(base, 'done'), stamp);
  }
  return { repoDir, guestHostname: WEB_GUEST_HOSTNAME };
}
