// End-to-end: real headless Chromium (playwright-core + Debian's chromium),
// real `hostme serve` over loopback, the i686 guest booting in v86 in the page.
// No timing asserts; timeouts are generous (v86 cold boot: ~1 min on 2 busy cores).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, cp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { startRepoServer, type RequestLogEntry, type RunningRepoServer } from '../server/server.js';
import {
  artifactsDir,
  CHROMIUM,
  CHROMIUM_ARGS,
  diskChunkIds,
  prepareWeb,
  publishWebRepo,
  startPageServer,
  tamperObject,
} from './web-fixtures.js';

const BOOT_TIMEOUT_MS = 420_000;
const prepared = prepareWeb();
const skip = 'skip' in prepared ? prepared.skip : false;

let base = '';
let repoDir = '';
let server: RunningRepoServer;
const requests: RequestLogEntry[] = [];
let context: BrowserContext;
let profile = '';

before(async () => {
  if (skip || 'skip' in prepared) return;
  ({ base, repoDir } = await publishWebRepo(prepared.guest));
  server = await startRepoServer({ repoDir, logger: (e) => requests.push(e) });
  profile = await mkdtemp(join(tmpdir(), 'hostme-chromium-'));
  context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, args: CHROMIUM_ARGS, viewport: { width: 1100, height: 700 } });
});

after(async () => {
  await context?.close();
  await server?.close();
  if (profile) await rm(profile, { recursive: true, force: true });
  if (base) await rm(base, { recursive: true, force: true });
});

async function waitForState(page: Page, states: string[], timeout = BOOT_TIMEOUT_MS): Promise<string> {
  await page.waitForFunction((s) => s.includes(document.body.dataset.state ?? ''), states, { timeout, polling: 500 });
  return page.evaluate(() => document.body.dataset.state ?? '');
}

const objectRequests = (from: number): RequestLogEntry[] => requests.slice(from).filter((r) => r.url.startsWith('/objects/') && r.method === 'GET');

test('button on another origin -> run page -> i686 guest prints HOSTME-READY; a small share of the disk is fetched; reload boots from the browser cache', { skip, timeout: 3 * BOOT_TIMEOUT_MS }, async () => {
  const embed = await startPageServer(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Embedder</title></head>
<body><h1>A project page</h1><p>Try it:</p>
<script src="${server.url}/button.js" data-image="hello-i686" async></script>
<noscript><a href="${server.url}/i/hello-i686/run">Run hello-i686 in your browser</a></noscript>
</body></html>`);
  const artifacts = await artifactsDir();
  try {
    const page = await context.newPage();
    await page.goto(embed.url);
    const button = page.getByRole('button', { name: /HostMe: run hello-i686/ });
    await button.waitFor();
    assert.equal(await button.getAttribute('aria-expanded'), 'false');
    // Keyboard: focus + Enter opens the menu with the first item focused.
    await button.focus();
    await page.keyboard.press('Enter');
    assert.equal(await button.getAttribute('aria-expanded'), 'true');
    const runHere = page.getByRole('menuitem', { name: /Run here, in this tab/ });
    const runLocal = page.getByRole('menuitem', { name: /Run on my computer/ });
    assert.equal(await runHere.getAttribute('href'), `${server.url}/i/hello-i686/run`);
    assert.equal(await runLocal.getAttribute('href'), `hostme+${server.url}/i/hello-i686`);
    await page.screenshot({ path: join(artifacts, 'button.png') });
    await page.keyboard.press('Escape');
    assert.equal(await button.getAttribute('aria-expanded'), 'false');

    const before = requests.length;
    await button.click();
    await Promise.all([page.waitForURL(`${server.url}/i/hello-i686/run`), runHere.click()]);
    const state = await waitForState(page, ['ready', 'error']);
    const info = await page.evaluate(() => ({
      message: document.getElementById('message')?.textContent ?? '',
      transcript: (window as unknown as { hostmeRun: { transcript: string } }).hostmeRun.transcript,
      screen: document.querySelector('.xterm-rows')?.textContent ?? '',
      bootMs: document.body.dataset.bootMs,
    }));
    await page.screenshot({ path: join(artifacts, 'run-page.png') });
    assert.equal(state, 'ready', `run page failed: ${info.message}`);
    assert.match(info.transcript, /HOSTME-READY/);
    assert.match(info.screen, /HOSTME-READY/, 'the terminal shows the guest output');

    // Only a small share of the disk was fetched.
    const ids = await diskChunkIds(repoDir, 'hello-i686');
    const diskIds = new Set(ids.filter((x): x is string => x !== null));
    const fetched = objectRequests(before);
    const diskFetched = fetched.filter((r) => diskIds.has(r.url.split('/').pop()!));
    const diskBytes = diskFetched.reduce((a, r) => a + r.bytes, 0);
    const diskSize = ids.length * 262144;
    console.log(`first boot: ${info.bootMs} ms to HOSTME-READY; ${fetched.length} object requests; disk: ${diskFetched.length} of ${diskIds.size} stored chunks (${ids.length} chunks in all), ${diskBytes} bytes of ${diskSize}`);
    assert.ok(diskFetched.length > 0, 'the disk was read through the chunk reader');
    assert.ok(diskBytes < diskSize / 10, `fetched ${diskBytes} bytes of a ${diskSize}-byte disk`);
    assert.ok(diskFetched.length < diskIds.size / 4, `fetched ${diskFetched.length} of ${diskIds.size} stored disk chunks`);
    // No object was requested twice (in-flight dedup + cache).
    assert.equal(new Set(fetched.map((r) => r.url)).size, fetched.length, 'each object fetched once');

    // Reload: everything comes from the browser cache.
    const beforeReload = requests.length;
    await page.reload();
    assert.equal(await waitForState(page, ['ready', 'error']), 'ready');
    const again = await page.evaluate(() => ({ cached: document.body.dataset.cachedObjects, bootMs: document.body.dataset.bootMs }));
    const reloadObjects = objectRequests(beforeReload);
    console.log(`reload: ${again.bootMs} ms to HOSTME-READY; ${again.cached} objects from the browser cache, ${reloadObjects.length} object requests`);
    assert.deepEqual(reloadObjects.map((r) => r.url), [], 'no chunk requests after a reload');
    assert.ok(Number(again.cached) > 0);
    await page.close();
  } finally {
    await embed.close();
  }
});

test('a tampered disk chunk is rejected and named on the page', { skip, timeout: BOOT_TIMEOUT_MS }, async () => {
  const copy = join(base, 'tampered');
  await cp(repoDir, copy, { recursive: true });
  const ids = await diskChunkIds(copy, 'hello-i686');
  const first = ids[0]!;
  await tamperObject(copy, first, 262144);
  const log: RequestLogEntry[] = [];
  const bad = await startRepoServer({ repoDir: copy, logger: (e) => log.push(e) });
  try {
    const page = await context.newPage();
    await page.goto(`${bad.url}/i/hello-i686/run`);
    assert.equal(await waitForState(page, ['ready', 'error']), 'error');
    const shown = await page.evaluate(() => ({
      message: document.getElementById('message')?.textContent ?? '',
      events: document.getElementById('events')?.textContent ?? '',
      label: document.body.dataset.invalidObject,
    }));
    assert.equal(shown.label, 'disk disk0 chunk 0');
    assert.match(shown.message, /integrity check/);
    assert.match(shown.message, /disk disk0 chunk 0/);
    assert.match(shown.message, new RegExp(first));
    assert.match(shown.events, /Rejected: disk disk0 chunk 0/);
    await page.screenshot({ path: join(await artifactsDir(), 'run-page-tampered.png') });
    await page.close();
  } finally {
    await bad.close();
  }
});

test('network lost while reading the disk: a visible error, and Retry resumes the boot', { skip, timeout: BOOT_TIMEOUT_MS + 60_000 }, async () => {
  // Another port is another origin: an empty browser cache, so the disk must be fetched.
  const second = await startRepoServer({ repoDir });
  const diskIds = new Set((await diskChunkIds(repoDir, 'hello-i686')).filter((x): x is string => x !== null));
  const page = await context.newPage();
  let blocked = 0;
  const cutDisk = (route: import('playwright-core').Route): Promise<void> => {
    blocked++;
    return route.abort('internetdisconnected');
  };
  const isDiskObject = (url: URL): boolean => url.pathname.startsWith('/objects/') && diskIds.has(url.pathname.split('/').pop()!);
  await page.route(isDiskObject, cutDisk);
  try {
    await page.goto(`${second.url}/i/hello-i686/run`);
    assert.equal(await waitForState(page, ['error', 'ready']), 'error');
    const message = (await page.locator('#message').textContent()) ?? '';
    assert.match(message, /network connection .* lost/);
    assert.ok(blocked > 0);
    await page.unroute(isDiskObject, cutDisk);
    await page.getByRole('button', { name: 'Retry' }).click();
    assert.equal(await waitForState(page, ['ready', 'error']), 'ready');
    assert.match(await page.evaluate(() => (window as unknown as { hostmeRun: { transcript: string } }).hostmeRun.transcript), /HOSTME-READY/);
  } finally {
    await page.close();
    await second.close();
  }
});

test('an x86_64 image says it needs hostme run', { skip, timeout: 120_000 }, async () => {
  const page = await context.newPage();
  await page.goto(`${server.url}/i/hello-x64/run`);
  assert.equal(await waitForState(page, ['needs-local', 'error'], 60_000), 'needs-local');
  const message = await page.locator('#message').textContent();
  assert.match(message ?? '', /needs `hostme run`/);
  assert.match(message ?? '', new RegExp(`hostme run ${server.url}/i/hello-x64`));
  await page.screenshot({ path: join(await artifactsDir(), 'run-page-x86_64.png') });
  await page.close();
});
