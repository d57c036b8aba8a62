// hostme snapshot end to end: the i686 guest boots once in v86 under Node, its
// saved state is published as a new signed version, and both a Node v86 and
// the run page in real Chromium resume it to an interactive shell. Bad input:
// x86_64 images, a ready point that never comes, another v86 build's state, a
// tampered state chunk. No timing asserts; times are logged.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { openRepository } from '../repo/repository.js';
import { isHole } from '../format/chunk-index.js';
import { loadPrivateKey } from '../pack/publisher-key.js';
import { startRepoServer, type RequestLogEntry } from '../server/server.js';
import { runCli } from '../testing/published-guest.js';
import { artifactsDir, launchChromium, prepareWeb, publishWebRepo, runTranscript, tamperObject, waitForRunState, waitForTranscript } from '../web/web-fixtures.js';
import { NodeMachine } from './node-machine.js';
import { memoryOverlay, openImageDisks, readWholeBlob } from '../device/image-disks.js';
import { v86PackageVersion } from './v86-install.js';
import type { SnapshotResult } from './take-snapshot.js';

const BOOT_TIMEOUT_MS = 420_000;
const prepared = prepareWeb();
const skip = 'skip' in prepared ? prepared.skip : false;

let base = '';
let repoDir = '';
let keyFile = '';
let snapshot: SnapshotResult;
let chromiumSession: { context: BrowserContext; close(): Promise<void> } | undefined;

before(async () => {
  if (skip || 'skip' in prepared) return;
  ({ base, repoDir } = await publishWebRepo(prepared.guest));
  keyFile = join(base, 'publisher.key');
  const result = await runCli(['snapshot', 'hello-i686', '--repo', repoDir, '--key', keyFile, '--json'], { timeoutMs: BOOT_TIMEOUT_MS });
  assert.equal(result.code, 0, `hostme snapshot failed: ${result.stderr}`);
  snapshot = JSON.parse(result.stdout) as SnapshotResult;
  console.log(
    `snapshot: cold boot to HOSTME-READY in v86 under Node ${snapshot.msToReady} ms; state ${snapshot.stateBytes} bytes, stored ${snapshot.storedBytes} bytes in ${snapshot.chunks} chunks`,
  );
});

after(async () => {
  await chromiumSession?.close();
  if (base) await rm(base, { recursive: true, force: true });
});

async function browser(): Promise<BrowserContext> {
  chromiumSession ??= await launchChromium();
  return chromiumSession.context;
}

const waitForState = (page: Page, states: string[], timeout = BOOT_TIMEOUT_MS): Promise<string> => waitForRunState(page, states, timeout);

test('hostme snapshot publishes a signed version whose memorySnapshot records the v86 build and machine', { skip }, async () => {
  assert.equal(snapshot.baseVersion, '1');
  assert.equal(snapshot.version, '2');
  const repo = openRepository(repoDir);
  const image = await repo.loadImage('hello-i686', snapshot.version);
  const s = image.manifest.memorySnapshot;
  assert.ok(s, 'the new version has a memorySnapshot');
  assert.equal(s.emulator, `v86@${v86PackageVersion()}`);
  assert.equal(s.size, snapshot.stateBytes);
  assert.ok(s.memoryBytes && s.memoryBytes >= 128 * 1048576);
  assert.equal(image.manifest.parent?.version, '1');
  assert.deepEqual(image.manifest.disks, (await repo.loadImage('hello-i686', '1')).manifest.disks, 'the snapshot version streams the same disk');
  assert.ok(snapshot.storedBytes < snapshot.stateBytes / 2, 'the state compresses (freed memory is zeroed, zero chunks dedupe)');
  const verify = await runCli(['verify', repoDir, 'hello-i686@' + snapshot.version]);
  assert.equal(verify.code, 0, verify.stderr + verify.stdout);
});

test('the saved state resumes in v86 under Node and answers a command', { skip, timeout: 120_000 }, async () => {
  const repo = openRepository(repoDir);
  const m = (await repo.loadImage('hello-i686', snapshot.version)).manifest;
  const state = await readWholeBlob(repo.objects, m.memorySnapshot!, 'memory snapshot');
  const [disk] = await openImageDisks(m, repo.objects, { overlay: memoryOverlay });
  const started = performance.now();
  const machine = await NodeMachine.start({ start: { kind: 'restore', state }, disk: disk!, memoryBytes: m.memorySnapshot!.memoryBytes!, vgaMemoryBytes: m.memorySnapshot!.vgaMemoryBytes! });
  try {
    const from = machine.transcript.length;
    machine.send('echo "answer $((6*7))"\n');
    await machine.waitFor(/answer 42/, 60_000, from);
    console.log(`Node restore: command answered ${Math.round(performance.now() - started)} ms after start (cold boot: ${snapshot.msToReady} ms)`);
  } finally {
    await machine.destroy();
  }
});

test('hostme snapshot refuses an x86_64 image that cannot boot from virtio-blk and a ready point that never comes, and publishes nothing', { skip, timeout: 240_000 }, async () => {
  const listing = await readFile(join(repoDir, 'index.json'), 'utf8');
  // x86_64 images are saved by QEMU, whose NVMe cannot migrate: this one has no virtio-blk driver (no initrd).
  const x64 = await runCli(['snapshot', 'hello-x64', '--repo', repoDir, '--key', keyFile, '--timeout', '60'], { env: { HOSTME_ACCEL: 'tcg' } });
  assert.equal(x64.code, 1);
  assert.match(x64.stderr, /x86_64 snapshots need a kernel that drives virtio-blk/);
  const never = await runCli(['snapshot', 'hello-i686@1', '--repo', repoDir, '--key', keyFile, '--until', 'NEVER-PRINTED', '--timeout', '15']);
  assert.equal(never.code, 1);
  assert.match(never.stderr, /did not print a match for \/NEVER-PRINTED\/ within 15 s/);
  assert.equal(await readFile(join(repoDir, 'index.json'), 'utf8'), listing, 'nothing was published');
});

test('the run page resumes the snapshot to an interactive shell', { skip, timeout: BOOT_TIMEOUT_MS }, async () => {
  const server = await startRepoServer({ repoDir });
  const page = await (await browser()).newPage();
  try {
    const clicked = performance.now();
    await page.goto(`${server.url}/i/hello-i686/run`);
    assert.equal(await waitForState(page, ['ready', 'error']), 'ready', (await page.locator('#message').textContent()) ?? '');
    assert.equal(await page.evaluate(() => document.body.dataset.start), 'restore');
    await page.locator('#terminal .xterm-helper-textarea').focus();
    await page.keyboard.type('echo "answer $((6*7))"\n');
    await waitForTranscript(page, /answer 42/, 60_000);
    const answeredMs = Math.round(performance.now() - clicked);
    const bootMs = await page.evaluate(() => document.body.dataset.bootMs);
    console.log(`run page: snapshot restored in ${bootMs} ms, command answered ${answeredMs} ms after navigation (cold boot under Node: ${snapshot.msToReady} ms)`);
    assert.match(await runTranscript(page), /answer 42/);
    await page.screenshot({ path: join(await artifactsDir(), 'run-page-snapshot.png') });
  } finally {
    await page.close();
    await server.close();
  }
});

test('the pointer on "Run here" warms the snapshot and the run page\'s files; the click then resumes from the HTTP cache', { skip, timeout: BOOT_TIMEOUT_MS }, async () => {
  const served: RequestLogEntry[] = [];
  const server = await startRepoServer({ repoDir, logger: (e) => served.push(e) });
  const own = await launchChromium(); // an empty HTTP cache
  try {
    const repo = openRepository(repoDir);
    const { manifest } = await repo.loadImage('hello-i686', snapshot.version);
    const ref = manifest.memorySnapshot!;
    const index = await repo.readIndex(ref, repo.objects, 'memory snapshot');
    const objectUrl = (id: string) => `/objects/${id.slice(0, 2)}/${id}`;
    const expected = [objectUrl(ref.index), ...new Set(index.ids.filter((id) => !isHole(id)).map(objectUrl))];

    const page = await own.context.newPage();
    await page.goto(`${server.url}/i/hello-i686`);
    const link = page.getByRole('link', { name: 'Run here, in this tab' });
    const listed = ((await link.getAttribute('data-hostme-warm')) ?? '').split(' ');
    for (const url of [...expected, '/_hostme/v86.wasm']) assert.ok(listed.includes(url), `the link lists ${url}`);
    const objectsServed = () => served.filter((e) => e.url.startsWith('/objects/'));
    assert.equal(objectsServed().length, 0, 'nothing is fetched before the visitor shows intent');

    await link.hover();
    await page.waitForFunction(() => /^\d+$/.test(document.querySelector<HTMLElement>('a[data-hostme-warm]')?.dataset.hostmeWarming ?? ''), undefined, { timeout: 120_000 });
    const warmed = objectsServed().map((e) => e.url);
    for (const url of expected) assert.equal(warmed.filter((u) => u === url).length, 1, `${url} fetched once on hover`);

    const before = served.length;
    await link.click();
    assert.equal(await waitForState(page, ['ready', 'error']), 'ready', (await page.locator('#message').textContent()) ?? '');
    assert.equal(await page.evaluate(() => document.body.dataset.start), 'restore');
    const again = served.slice(before).filter((e) => expected.includes(e.url));
    assert.deepEqual(again.map((e) => e.url), [], 'the run page read the warmed snapshot from the HTTP cache');
    await page.locator('#terminal .xterm-helper-textarea').focus();
    await page.keyboard.type('echo "answer $((6*7))"\n');
    await waitForTranscript(page, /answer 42/, 60_000);
  } finally {
    await own.close();
    await server.close();
  }
});

test('a snapshot from another v86 build is not loaded: the page says so and boots from scratch', { skip, timeout: 240_000 }, async () => {
  const copy = await mkdtemp(join(tmpdir(), 'hostme-snapshot-other-'));
  try {
    await cp(repoDir, copy, { recursive: true });
    const repo = openRepository(copy);
    const current = (await repo.loadImage('hello-i686', snapshot.version)).manifest;
    await repo.publish({ ...current, version: 'other-v86', memorySnapshot: { ...current.memorySnapshot!, emulator: 'v86@0.0.1-elsewhere' } }, await loadPrivateKey(keyFile));
    const log: RequestLogEntry[] = [];
    const server = await startRepoServer({ repoDir: copy, logger: (e) => log.push(e) });
    const page = await (await browser()).newPage();
    try {
      await page.goto(`${server.url}/i/hello-i686/run`);
      await waitForState(page, ['booting', 'ready', 'error'], 120_000);
      const shown = await page.evaluate(() => ({ start: document.body.dataset.start, state: document.body.dataset.state, events: document.getElementById('events')?.textContent ?? '' }));
      assert.equal(shown.start, 'boot');
      assert.notEqual(shown.state, 'error');
      assert.match(shown.events, /saved by v86@0\.0\.1-elsewhere and this page runs v86@.*booting from scratch instead/);
      const kernelIndex = current.boot.mode === 'direct' ? current.boot.kernel.index : '';
      assert.ok(log.some((r) => r.url.endsWith(kernelIndex)), 'the kernel was fetched for the cold boot');
      assert.ok(!log.some((r) => r.url.endsWith(current.memorySnapshot!.index)), 'the foreign state was never fetched');
    } finally {
      await page.close();
      await server.close();
    }
  } finally {
    await rm(copy, { recursive: true, force: true });
  }
});

test('a tampered snapshot chunk is rejected and named; the page does not run it', { skip, timeout: 240_000 }, async () => {
  const copy = await mkdtemp(join(tmpdir(), 'hostme-snapshot-tampered-'));
  try {
    await cp(repoDir, copy, { recursive: true });
    const copied = openRepository(copy);
    const s = (await copied.loadImage('hello-i686', snapshot.version)).manifest.memorySnapshot!;
    const { ids } = await copied.readIndex(s);
    // A chunk whose content occurs once, so the rejection names exactly that chunk.
    const unique = ids.findIndex((id, i) => i > 0 && ids.indexOf(id) === ids.lastIndexOf(id));
    await tamperObject(copy, ids[unique]!, Math.min(s.chunkSize, s.size - unique * s.chunkSize));
    const server = await startRepoServer({ repoDir: copy });
    const page = await (await browser()).newPage();
    try {
      await page.goto(`${server.url}/i/hello-i686/run`);
      assert.equal(await waitForState(page, ['ready', 'error'], 120_000), 'error');
      assert.equal(await page.evaluate(() => document.body.dataset.start), 'restore');
      const shown = await page.evaluate(() => ({ message: document.getElementById('message')?.textContent ?? '', label: document.body.dataset.invalidObject }));
      assert.equal(shown.label, `memory snapshot chunk ${unique}`);
      assert.match(shown.message, /integrity check/);
    } finally {
      await page.close();
      await server.close();
    }
  } finally {
    await rm(copy, { recursive: true, force: true });
  }
});
