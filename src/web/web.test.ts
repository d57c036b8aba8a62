// End-to-end: real headless Chromium (playwright-core + Debian's chromium),
// real `hostme serve` over loopback, the i686 guest booting in v86 in the page.
// No timing asserts; timeouts are generous (v86 cold boot: ~1 min on 2 busy cores).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rm, cp } from 'node:fs/promises';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { startRepoServer, type RequestLogEntry, type RunningRepoServer } from '../server/server.js';
import {
  artifactsDir,
  diskChunkIds,
  launchChromium,
  prepareWeb,
  publishWebRepo,
  publishWithPrefetch,
  runTranscript,
  startPageServer,
  tamperObject,
  waitForRunState,
} from './web-fixtures.js';

const BOOT_TIMEOUT_MS = 420_000;
const prepared = prepareWeb();
const skip = 'skip' in prepared ? prepared.skip : false;

let base = '';
let repoDir = '';
let keyFile = '';
let server: RunningRepoServer;
const requests: RequestLogEntry[] = [];
let context: BrowserContext;
let browser: { context: BrowserContext; close(): Promise<void> } | undefined;

before(async () => {
  if (skip || 'skip' in prepared) return;
  ({ base, repoDir } = await publishWebRepo(prepared.guest));
  keyFile = join(base, 'publisher.key');
  server = await startRepoServer({ repoDir, logger: (e) => requests.push(e) });
  browser = await launchChromium();
  context = browser.context;
});

after(async () => {
  await browser?.close();
  await server?.close();
  if (base) await rm(base, { recursive: true, force: true });
});

const waitForState = (page: Page, states: string[], timeout = BOOT_TIMEOUT_MS): Promise<string> => waitForRunState(page, states, timeout, 500);

const isObjectGet = (r: RequestLogEntry): boolean => r.url.startsWith('/objects/') && r.method === 'GET';
const objectRequests = (from: number): RequestLogEntry[] => requests.slice(from).filter(isObjectGet);

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
    // xterm.js paints on animation frames: the transcript can be ahead of the screen on a loaded machine.
    const screenShows = await page
      .waitForFunction(() => /HOSTME-READY/.test(document.querySelector('.xterm-rows')?.textContent ?? ''), undefined, { timeout: 30_000 })
      .then(() => true, () => false);
    assert.ok(screenShows, `the terminal shows the guest output (screen: ${JSON.stringify(info.screen.slice(-200))})`);

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
    // v86.wasm crosses the link once: the emulator and the page's zstd decoder (reader/codecs.ts) share one compiled module.
    const wasmBodies = requests.slice(before).filter((r) => r.url.startsWith('/_hostme/v86.wasm') && r.bytes > 0);
    assert.equal(wasmBodies.length, 1, `v86.wasm sent ${wasmBodies.length} times`);

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
    assert.match(await runTranscript(page), /HOSTME-READY/);
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

test('a browser without WebAssembly gets a message and the hostme run command, not a blank page; nothing is downloaded', { skip, timeout: 120_000 }, async () => {
  const page = await context.newPage();
  await page.addInitScript(() => Object.defineProperty(window, 'WebAssembly', { value: undefined, configurable: true }));
  const from = requests.length;
  await page.goto(`${server.url}/i/hello-i686/run`);
  assert.equal(await waitForState(page, ['needs-local', 'error', 'ready'], 60_000), 'needs-local');
  const message = (await page.locator('#message').textContent()) ?? '';
  assert.match(message, /cannot run WebAssembly/);
  assert.match(message, new RegExp(`hostme run ${server.url}/i/hello-i686`));
  assert.deepEqual(objectRequests(from), [], 'no image objects fetched');
  await page.close();
});

test('web+hostme: the image and run pages register the protocol handler on click; its URL opens the run page', { skip, timeout: 120_000 }, async () => {
  const page = await context.newPage();
  // Observe the real call (headless shows no prompt): record it, then let Chromium's own implementation run.
  await page.addInitScript(() => {
    const calls: Array<{ scheme: string; url: string; error?: string }> = [];
    (window as unknown as { handlerCalls: typeof calls }).handlerCalls = calls;
    const register = navigator.registerProtocolHandler.bind(navigator);
    navigator.registerProtocolHandler = (scheme: string, url: string | URL): void => {
      const call: { scheme: string; url: string; error?: string } = { scheme, url: String(url) };
      calls.push(call);
      try {
        register(scheme, url);
      } catch (err) {
        call.error = String(err);
        throw err;
      }
    };
  });
  const calls = (): Promise<Array<{ scheme: string; url: string; error?: string }>> =>
    page.evaluate(() => (window as unknown as { handlerCalls: Array<{ scheme: string; url: string; error?: string }> }).handlerCalls);
  try {
    await page.goto(`${server.url}/i/hello-i686`);
    assert.equal(await page.getByRole('link', { name: 'Run here, in this tab' }).getAttribute('href'), '/i/hello-i686/run');
    const offer = page.getByRole('button', { name: 'Open web+hostme: links with this site' });
    await offer.waitFor({ state: 'visible' });
    assert.deepEqual(await calls(), [], 'nothing is registered before the click');
    await offer.click();
    const template = `${server.url}/open?u=%s`;
    assert.deepEqual(await calls(), [{ scheme: 'web+hostme', url: template }], 'registered without throwing');
    assert.equal(await page.evaluate(() => document.body.dataset.protocolHandler), 'requested');
    assert.match((await page.locator('#handler-status').textContent()) ?? '', /web\+hostme: links here/);

    // The handler URL, as the browser fills it in for a clicked link, lands on the run page (x86_64: no boot).
    await page.goto(template.replace('%s', encodeURIComponent(`web+hostme:${server.url}/i/hello-x64`)));
    assert.equal(page.url(), `${server.url}/i/hello-x64/run`);
    assert.equal(await waitForState(page, ['needs-local', 'error'], 60_000), 'needs-local');
    // The run page offers the same button.
    await page.getByRole('button', { name: 'Open web+hostme: links with this site' }).click();
    assert.deepEqual(await calls(), [{ scheme: 'web+hostme', url: template }]);

    // A link to another site is explained, not followed.
    const foreign = await page.goto(template.replace('%s', encodeURIComponent('web+hostme:https://elsewhere.example/i/hello')));
    assert.equal(foreign?.status(), 404);
    assert.equal(new URL(page.url()).pathname, '/open');
    assert.match((await page.locator('h1').textContent()) ?? '', /on another site/);
  } finally {
    await page.close();
  }
});

test('Screen view: the guest\'s VGA text is visible, keys go to it only while it has focus, Fullscreen enlarges it', { skip, timeout: 240_000 }, async () => {
  const page = await context.newPage();
  try {
    await page.goto(`${server.url}/i/hello-i686/run`);
    const screenButton = page.getByRole('button', { name: 'Screen', exact: true });
    const consoleButton = page.getByRole('button', { name: 'Console', exact: true });
    await page.waitForFunction(() => !(document.getElementById('view-screen') as HTMLButtonElement).disabled, null, { timeout: 120_000 });
    assert.equal(await screenButton.getAttribute('aria-pressed'), 'false');
    assert.equal(await page.evaluate(() => document.body.dataset.screenKeyboard), 'off', 'keys go to the serial console first');

    await screenButton.click();
    assert.equal(await screenButton.getAttribute('aria-pressed'), 'true');
    assert.equal(await consoleButton.getAttribute('aria-pressed'), 'false');
    assert.ok(await page.locator('#screen').isVisible());
    assert.ok(await page.locator('#terminal').isHidden());
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'screen', 'the screen takes focus');
    assert.equal(await page.evaluate(() => document.body.dataset.screenKeyboard), 'on');

    // SeaBIOS writes its banner to the VGA text console before the kernel starts.
    await page.waitForFunction(() => /SeaBIOS/.test(document.querySelector('#screen > div')?.textContent ?? ''), null, { timeout: 180_000, polling: 500 });
    const shown = await page.evaluate(() => (document.querySelector('#screen > div')?.textContent ?? '').replace(/\s+/g, ' ').trim());
    console.log(`screen text: ${shown.slice(0, 200)}`);
    await page.screenshot({ path: join(await artifactsDir(), 'run-page-screen.png') });

    await page.getByRole('button', { name: 'Fullscreen' }).click();
    await page.waitForFunction(() => document.fullscreenElement !== null, null, { timeout: 10_000 });
    assert.equal(await page.evaluate(() => document.fullscreenElement?.id), 'screen', 'Fullscreen applies to the shown view');
    assert.equal(await page.evaluate(() => document.body.dataset.screenKeyboard), 'on', 'keys still go to the screen');
    await page.evaluate(() => document.exitFullscreen());

    // Focus elsewhere: the page's own keys work again.
    await page.locator('#stop').focus();
    assert.equal(await page.evaluate(() => document.body.dataset.screenKeyboard), 'off');
    await consoleButton.click();
    assert.equal(await consoleButton.getAttribute('aria-pressed'), 'true');
    assert.ok(await page.locator('#terminal').isVisible());
    assert.ok(await page.locator('#screen').isHidden());
    assert.equal(await page.evaluate(() => document.body.dataset.screenKeyboard), 'off');
    await page.getByRole('button', { name: 'Stop' }).click();
    assert.equal(await page.evaluate(() => document.body.dataset.state), 'stopped');
  } finally {
    await page.close();
  }
});

test('a profiled image: the manifest\'s prefetch chunks are fetched in the background, counted, and the guest boots', { skip, timeout: BOOT_TIMEOUT_MS }, async () => {
  const copy = join(base, 'profiled');
  await cp(repoDir, copy, { recursive: true });
  const ids = await diskChunkIds(copy, 'hello-i686');
  const stored = ids.flatMap((id, chunk) => (id ? [chunk] : []));
  // Chunk 0 (the boot reads it first) and stored chunks spread over the disk (a boot reads ~10 of 107).
  const n = stored.length;
  const chunks = [0, ...new Set([stored[Math.floor(n / 3)]!, stored[Math.floor(n / 2)]!, stored[Math.floor((2 * n) / 3)]!, stored[n - 1]!])];
  await publishWithPrefetch(copy, keyFile, 'hello-i686', '2', chunks.map((c): [number, number] => [0, c]));
  const log: RequestLogEntry[] = [];
  const profiled = await startRepoServer({ repoDir: copy, logger: (e) => log.push(e) });
  const page = await context.newPage();
  try {
    await page.goto(`${profiled.url}/i/hello-i686/run`);
    assert.equal(await page.evaluate(() => document.body.dataset.version), '2');
    assert.equal(await waitForState(page, ['ready', 'error']), 'ready', (await page.locator('#message').textContent()) ?? '');
    const stats = await page.evaluate(() => ({
      prefetch: (window as unknown as { hostmeRun: { prefetch?: { planned: number; fetched: number; skipped: number; failed: number; running: boolean } } }).hostmeRun.prefetch,
      guestRead: (window as unknown as { hostmeRun: { guestReadChunks: () => number[] } }).hostmeRun.guestReadChunks(),
      shown: document.body.dataset.prefetched,
      text: document.getElementById('progress-text')?.textContent ?? '',
    }));
    const requested = new Set(log.filter(isObjectGet).map((r) => r.url.split('/').pop()!));
    const prefetchIds = new Set(chunks.map((c) => ids[c]!));
    const onlyPrefetched = chunks.filter((c) => !stats.guestRead.includes(c));
    console.log(`prefetch: ${JSON.stringify(stats.prefetch)}; ${stats.text}; guest read chunks ${stats.guestRead.join(',')}; listed but never read by the guest: ${onlyPrefetched.join(',')}`);
    for (const id of prefetchIds) assert.ok(requested.has(id), `prefetch object ${id} was requested`);
    assert.ok(onlyPrefetched.length > 0, 'some listed chunks were fetched although the guest never read them: prefetch fetched them');
    assert.equal(log.filter(isObjectGet).length, requested.size, 'each object fetched once (prefetch and demand share fetches)');
    assert.ok(stats.prefetch, 'prefetch stats are published');
    assert.equal(stats.prefetch.planned, chunks.length);
    assert.equal(stats.prefetch.fetched + stats.prefetch.skipped, chunks.length);
    assert.equal(stats.prefetch.failed, 0);
    assert.equal(stats.prefetch.running, false);
    assert.ok(stats.prefetch.fetched >= onlyPrefetched.length, 'the chunks the guest never read were loaded by prefetch');
    assert.equal(stats.shown, String(stats.prefetch.fetched));
    assert.match(stats.text, new RegExp(`prefetched ${stats.prefetch.fetched} of ${chunks.length} boot chunks`));
  } finally {
    await page.close();
    await profiled.close();
  }
});

test('browser storage full: the page says so, keeps running without caching, and a reload fetches again', { skip, timeout: 2 * BOOT_TIMEOUT_MS }, async () => {
  // A fresh origin (another port), its quota shrunk to 1 byte: every Cache API put fails with QuotaExceededError.
  const log: RequestLogEntry[] = [];
  const full = await startRepoServer({ repoDir, logger: (e) => log.push(e) });
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin: full.url, quotaSize: 1 });
  // Objects are immutable, so the HTTP cache would answer the reload's fetches itself: off, so the server sees them.
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  try {
    await page.goto(`${full.url}/i/hello-i686/run`);
    assert.equal(await waitForState(page, ['ready', 'error']), 'ready', (await page.locator('#message').textContent()) ?? '');
    const first = await page.evaluate(async () => ({
      warning: document.body.dataset.cacheWarning ?? '',
      events: document.getElementById('events')?.textContent ?? '',
      cachedEntries: (await (await caches.open('hostme-objects-v1')).keys()).length,
    }));
    await page.screenshot({ path: join(await artifactsDir(), 'run-page-storage-full.png') });
    assert.match(first.warning, /^Browser storage is full \(quota exceeded\): this session runs without caching/);
    assert.ok(first.events.includes(first.warning), 'the warning is on the page');
    const firstObjects = log.filter(isObjectGet).length;
    assert.ok(firstObjects > 0);

    const beforeReload = log.length;
    await page.reload();
    assert.equal(await waitForState(page, ['ready', 'error']), 'ready', (await page.locator('#message').textContent()) ?? '');
    const again = await page.evaluate(() => ({
      warning: document.body.dataset.cacheWarning ?? '',
      cached: Number(document.body.dataset.cachedObjects ?? 0),
      fetched: Number(document.body.dataset.fetchedObjects ?? 0),
    }));
    const reloadObjects = log.slice(beforeReload).filter(isObjectGet).length;
    console.log(`storage full: first boot ${firstObjects} object requests; ${first.cachedEntries} cache entries kept; reload ${reloadObjects} object requests (page: ${again.fetched} fetched), ${again.cached} from the cache`);
    assert.ok(again.fetched > 0 && reloadObjects > 0, 'the reload fetched chunks again');
    assert.ok(again.cached <= first.cachedEntries, 'only entries that were completely stored (and verify) come from the cache');
    assert.match(again.warning, /^Browser storage is full/, 'the reload says so again');
    assert.match(await runTranscript(page), /HOSTME-READY/);
  } finally {
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: full.url }).catch(() => undefined);
    await page.close();
    await full.close();
  }
});

test('the run page lists the grants in hostme run\'s words: the network the URL joins granted; folders, egress and ports denied', { skip, timeout: 120_000 }, async () => {
  const page = await context.newPage();
  try {
    await page.goto(`${server.url}/i/hello-i686/run?net=demo`);
    await page.locator('#grants li[data-kind="screen"]').waitFor({ state: 'attached', timeout: 60_000 });
    const items = await page.locator('#grants li').evaluateAll((els) => els.map((el) => `${(el as HTMLElement).dataset.kind}|${el.textContent}`));
    assert.deepEqual(items, [
      'network|join overlay network "demo" (reach the other environments on it): granted',
      'egress|internet egress (no egress proxy in the browser): denied',
      'dir|host folders: denied',
      'port|published ports: denied',
      'console|console: granted',
      'screen|screen: granted',
    ]);
  } finally {
    await page.close();
  }
});
