// Test fixtures for the browser work: the i686 guest packed into a repository,
// a headless Chromium (Debian's, never a downloaded one), and a plain HTTP
// server for "another origin".
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { loadPrivateKey } from '../pack/publisher-key.js';
import { packImage } from '../pack/pack-image.js';
import { openRepository } from '../repo/repository.js';
import { packWithNewKey, skipUnlessCi } from '../testing/fixtures.js';
import { decodeIndex, isHole } from '../format/chunk-index.js';
import { decodeObject } from '../format/object-codec.js';
import { nodeCodecs } from '../format/node/codecs.js';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CHROMIUM = process.env.HOSTME_CHROMIUM ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-sync',
  '--disable-quic',
];

/**
 * WebRTC between headless Chromium profiles and Node peers on one machine:
 * ICE host candidates as plain addresses (not mDNS names, which nothing here
 * resolves), loopback allowed.
 */
export const CHROMIUM_WEBRTC_ARGS = ['--disable-features=WebRtcHideLocalIpsWithMdns', '--allow-loopback-in-peer-connection'];

export interface I686Guest {
  kernel: string;
  initrd: string;
  disk: string;
  cmdline: string;
  memoryMiB: number;
}

/** Builds (or reuses) the i686 guest and the web bundle; undefined with a reason when that is impossible here. */
export function prepareWeb(): { guest: I686Guest } | { skip: string } {
  if (!existsSync(CHROMIUM)) return { skip: skipUnlessCi(`no Chromium at ${CHROMIUM} (apt-get install chromium)`) };
  const build = spawnSync('bash', [join(REPO_ROOT, 'scripts/guest/build-i686.sh')], { stdio: 'inherit' });
  if (build.status !== 0) return { skip: skipUnlessCi('the i686 guest could not be built (scripts/guest/build-i686.sh)') };
  const web = spawnSync('bash', [join(REPO_ROOT, 'scripts/build-web.sh')], { stdio: 'inherit' });
  if (web.status !== 0) return { skip: skipUnlessCi('the web bundle could not be built (scripts/build-web.sh)') };
  const dir = join(process.env.HOSTME_GUEST_DIR ?? join(REPO_ROOT, '.cache/guest'), 'hello-i686');
  return { guest: JSON.parse(readFileSync(join(dir, 'guest.json'), 'utf8')) as I686Guest };
}

/** A fresh repository with hello-i686 (the i686 guest) and hello-x64 (an x86_64 image, never booted). */
export async function publishWebRepo(guest: I686Guest): Promise<{ base: string; repoDir: string }> {
  const base = await mkdtemp(join(tmpdir(), 'hostme-web-'));
  const repoDir = join(base, 'repo');
  const { key, repo } = await packWithNewKey(base, repoDir, {
    disk: guest.disk,
    name: 'hello-i686',
    version: '1',
    kernel: guest.kernel,
    initrd: guest.initrd,
    cmdline: guest.cmdline,
    memoryMiB: guest.memoryMiB,
    arch: 'i686',
    description: 'i686 busybox guest',
  });
  const small = join(base, 'small.raw');
  await writeFile(small, Buffer.alloc(1 << 20, 1));
  await packImage({ repo, workDir: base, disk: small, name: 'hello-x64', version: '1', key, kernel: guest.kernel, cmdline: 'console=ttyS0', arch: 'x86_64' });
  return { base, repoDir };
}

interface ManifestLite {
  disks: Array<{ size: number; chunkSize: number; index: string }>;
}

async function readManifest(repoDir: string, name: string): Promise<ManifestLite> {
  const env = JSON.parse(await readFile(join(repoDir, 'manifests', name, '1.json'), 'utf8')) as { payload: string };
  return JSON.parse(Buffer.from(env.payload, 'base64').toString('utf8')) as ManifestLite;
}

/**
 * Publishes NAME@VERSION: the latest manifest of NAME with `prefetch` set (what
 * `hostme profile` publishes after a recorded boot), signed with the
 * repository's test key (publishWebRepo writes it next to the repository).
 */
export async function publishWithPrefetch(repoDir: string, keyFile: string, name: string, version: string, prefetch: Array<[number, number]>): Promise<void> {
  const repo = openRepository(repoDir);
  const key = await loadPrivateKey(keyFile);
  const base = await repo.loadImage(name, undefined, { trusted: [key] });
  await repo.publish({ ...base.manifest, version, created: new Date().toISOString(), prefetch, parent: { version: base.manifest.version, digest: base.digest } }, key);
}

/** The object ids of disk 0's chunks (null for holes). */
export async function diskChunkIds(repoDir: string, name: string): Promise<Array<string | null>> {
  const disk = (await readManifest(repoDir, name)).disks[0]!;
  const n = Math.ceil(disk.size / disk.chunkSize);
  const stored = await readFile(join(repoDir, 'objects', disk.index.slice(0, 2), disk.index));
  const index = decodeIndex(await decodeObject(nodeCodecs, disk.index, 32 + 32 * n, new Uint8Array(stored)));
  return index.ids.map((id) => (isHole(id) ? null : id));
}

/** Replaces an object file with wrong bytes of the right length (what a broken or lying server would send). */
export async function tamperObject(repoDir: string, id: string, length: number): Promise<void> {
  const file = join(repoDir, 'objects', id.slice(0, 2), id);
  await rm(file, { force: true });
  await writeFile(file, Buffer.alloc(length, 0x5a));
}

/** A plain HTTP server (a different origin) serving one HTML page. */
export async function startPageServer(html: string): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    if (req.url === '/' || req.url === '/index.html') {
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.end(html);
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, server, close: () => new Promise<void>((r) => server.close(() => r())) };
}

export async function artifactsDir(): Promise<string> {
  const dir = join(REPO_ROOT, 'test-artifacts');
  await mkdir(dir, { recursive: true });
  return dir;
}

/** Headless Debian Chromium with a fresh profile (an empty browser cache); close() also removes the profile. */
export async function launchChromium(extraArgs: string[] = []): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  const profile = await mkdtemp(join(tmpdir(), 'hostme-chromium-'));
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, args: [...CHROMIUM_ARGS, ...extraArgs], viewport: { width: 1100, height: 700 } });
  return {
    context,
    close: async () => {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** Wait until the run page's state (body[data-state]) is one of `states`; returns it. */
export async function waitForRunState(page: Page, states: string[], timeoutMs: number, pollingMs = 200): Promise<string> {
  await page.waitForFunction((s) => s.includes(document.body.dataset.state ?? ''), states, { timeout: timeoutMs, polling: pollingMs });
  return page.evaluate(() => document.body.dataset.state ?? '');
}

/** The guest's serial output so far, as the run page recorded it (window.hostmeRun.transcript). */
export function runTranscript(page: Page): Promise<string> {
  return page.evaluate(() => (window as unknown as { hostmeRun: { transcript: string } }).hostmeRun.transcript);
}

/** Wait until the guest's serial output matches `pattern` (polled every `pollingMs`). */
export async function waitForTranscript(page: Page, pattern: RegExp, timeoutMs: number, pollingMs = 200): Promise<void> {
  await page.waitForFunction(
    ([source, flags]) => new RegExp(source, flags).test((window as unknown as { hostmeRun: { transcript: string } }).hostmeRun.transcript),
    [pattern.source, pattern.flags] as const,
    { timeout: timeoutMs, polling: pollingMs },
  );
}
