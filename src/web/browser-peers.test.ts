// Browser peers (docs/peers.md "Browser peers"): real headless Chromium
// profiles (separate persistent contexts, so separate Cache-API stores) on one
// image served by a real `hostme serve --hub` process, trading chunks over
// real WebRTC data channels signaled by that hub, with Node peers
// (node-datachannel) in the same swarm. Origin object requests are counted
// in the hub's own request log. No timing asserts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { nodeCodecs } from '../format/node/codecs.js';
import { indexByteLength } from '../format/chunk-index.js';
import { startCli, type CliProcess } from '../testing/cli-process.js';
import { RtcSwarm } from '../peer/rtc.js';
import { closeNodeRtc, nodeRtcEnvironment } from '../peer/node-rtc.js';
import type { ChannelPeer } from '../peer/channel-peer.js';
import { CacheDir } from '../runner/cache-dir.js';
import { openRepository } from '../repo/repository.js';
import { CHROMIUM_WEBRTC_ARGS, launchChromium, prepareWeb, publishWebRepo, waitForRunState } from './web-fixtures.js';

const BOOT_TIMEOUT_MS = 420_000;
const prepared = prepareWeb();
const skip = 'skip' in prepared ? prepared.skip : false;
const IMAGE = 'hello-i686@1';

let base = '';
let repoDir = '';
let hub: CliProcess;
let hubUrl = '';
/** Object GETs the hub answered (its own request log on stderr), counted line by line. */
let originObjects = 0;
const browsers: Array<{ close(): Promise<void> }> = [];
const swarms: RtcSwarm[] = [];

interface PageRun {
  state: string;
  stats: { fetchedObjects: number; peerObjects?: number };
  peers?: { listed: number; dropped: string[]; open: () => string[]; served: () => { objects: number }; skipped: Record<string, number> };
  flushCache?: () => Promise<void>;
}

before(async () => {
  if (skip || 'skip' in prepared) return;
  ({ base, repoDir } = await publishWebRepo(prepared.guest));
  hub = await startCli(['serve', repoDir, '--port', '0', '--hub', '--hub-state', join(base, 'hub.db'), '--json']);
  hubUrl = String(hub.info.url);
  let partial = '';
  hub.child.stderr.on('data', (d: Buffer) => {
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop() ?? '';
    originObjects += lines.filter((l) => /^GET \/objects\//.test(l)).length;
  });
});

after(async () => {
  for (const s of swarms) s.close();
  for (const b of browsers) await b.close().catch(() => {});
  await hub?.kill('SIGTERM');
  await closeNodeRtc();
  if (base) await rm(base, { recursive: true, force: true });
});

async function openTab(): Promise<Page> {
  const browser = await launchChromium(CHROMIUM_WEBRTC_ARGS);
  browsers.push(browser);
  const page = await browser.context.newPage();
  page.on('console', (m) => {
    if (process.env.HOSTME_TEST_VERBOSE) process.stderr.write(`[page] ${m.text()}\n`);
  });
  await page.goto(`${hubUrl}/i/hello-i686/run`);
  return page;
}

const runOf = (page: Page) => page.evaluate(() => {
  const r = (window as unknown as { hostmeRun: PageRun }).hostmeRun;
  return { state: r.state, timings: (r as unknown as { timings: Record<string, number> }).timings, stats: r.stats, listed: r.peers?.listed ?? -1, dropped: r.peers?.dropped ?? [], open: r.peers?.open() ?? [], served: r.peers?.served().objects ?? 0, skipped: r.peers?.skipped ?? {} };
});

/** A Node member of the swarm (node-datachannel, this test's process): serves what `object` returns, or only fetches. */
async function nodeMember(object?: (id: string) => Promise<Uint8Array | null>): Promise<RtcSwarm> {
  const swarm = new RtcSwarm(await nodeRtcEnvironment(), {
    hub: hubUrl,
    image: IMAGE,
    codecs: nodeCodecs,
    ...(object ? { serve: { object, manifest: async () => null } } : {}),
  });
  swarms.push(swarm);
  await swarm.start();
  return swarm;
}

async function readObject(id: string): Promise<Uint8Array | null> {
  return readFile(join(repoDir, 'objects', id.slice(0, 2), id)).then((b) => new Uint8Array(b), () => null);
}

test('two Chromium profiles on one image: the second fetches from the first over WebRTC (origin requests drop); a lying Node peer is refused, named and reported; a Node peer fetches from a tab', { skip, timeout: 3 * BOOT_TIMEOUT_MS }, async (t) => {
  // A Node member that lies: the real stored bytes of each object with one byte flipped (right length, wrong content).
  let lies = 0;
  const liar = await nodeMember(async (id) => {
    const real = await readObject(id);
    if (!real) return null;
    real[real.length >> 1]! ^= 0xff;
    lies++;
    return real;
  });
  const liarName = `webrtc peer ${liar.selfId!.slice(0, 8)}`;

  // Tab A boots from the origin; the liar is the only member, tried first, refused.
  const atStart = originObjects;
  const tabA = await openTab();
  assert.equal(await tabA.evaluate(() => document.body.dataset.swarm), IMAGE, 'an open hub offers the public image a swarm');
  assert.equal(await waitForRunState(tabA, ['ready', 'error'], BOOT_TIMEOUT_MS, 500), 'ready', `tab A: ${JSON.stringify(await runOf(tabA))}`);
  const a = await runOf(tabA);
  assert.equal(a.listed, 1, 'the hub introduced tab A to the liar');
  assert.ok(lies >= 1, 'the liar was asked');
  assert.deepEqual(a.dropped, [liarName], 'the liar is dropped and named');
  assert.match(await tabA.locator('#events').innerText(), new RegExp(`Peer ${liarName} served wrong bytes for object [0-9a-f]+…: refused, dropped and reported to the hub`));
  assert.equal(a.stats.peerObjects ?? 0, 0, 'nothing the liar sent was used');
  const objectsA = originObjects - atStart;
  assert.ok(objectsA > 10, `tab A read ${objectsA} objects from the origin`);
  // The hub got the report through the signaling socket.
  for (let i = 0; i < 100 && !hub.stderr().includes(`webrtc member ${liar.selfId!.slice(0, 8)}`); i++) await new Promise((r) => setTimeout(r, 100));
  assert.match(hub.stderr(), new RegExp(`webrtc member ${liar.selfId!.slice(0, 8)} \\(\\S+\\) reported by \\S+ for wrong bytes`));
  liar.close();

  // Tab A's machine stops (its disk reads would count at the origin); the tab stays in the swarm and serves from its cache.
  await tabA.evaluate(() => (window as unknown as { hostmeRun: PageRun }).hostmeRun.flushCache?.());
  await tabA.click('#stop');

  // Tab B (another profile, an empty cache) boots from tab A.
  const beforeB = originObjects;
  const tabB = await openTab();
  assert.equal(await waitForRunState(tabB, ['ready', 'error'], BOOT_TIMEOUT_MS, 500), 'ready', `tab B: ${JSON.stringify(await runOf(tabB))}`);
  const b = await runOf(tabB);
  const objectsB = originObjects - beforeB;
  assert.ok(b.listed >= 1, 'the hub introduced tab B to tab A');
  assert.ok((b.stats.peerObjects ?? 0) > 0, `tab B fetched from a peer: ${JSON.stringify(b.stats)}`);
  // Tab B reads what tab A read: every object it got from tab A is one the origin did not serve (on a loaded
  // machine some reads leave a busy tab after the window and go to the origin: the drop is not all or nothing).
  const why = `tab A ${objectsA}, tab B ${objectsB} (${b.stats.peerObjects} objects from tab A; reads that left it: ${JSON.stringify(b.skipped)}; timings ${JSON.stringify(b.timings)})`;
  assert.ok(objectsB < objectsA && (b.stats.peerObjects ?? 0) * 4 >= objectsA, `origin object requests drop: ${why}`);
  assert.ok(objectsB + (b.stats.peerObjects ?? 0) >= objectsA - 2, `the objects tab A served are the drop: ${why}`);
  assert.ok((await runOf(tabA)).served >= (b.stats.peerObjects ?? 0), 'tab A served what tab B got from peers');
  t.diagnostic(`origin objects: tab A ${objectsA}, tab B ${objectsB}; tab B from tab A: ${b.stats.peerObjects} objects; reads that left tab A: ${JSON.stringify(b.skipped)}`);
  assert.match(await tabB.locator('#progress-text').innerText(), /from peers/);

  // A Node peer (fetch only) joins and reads an object of the image from a tab, verified.
  const manifest = JSON.parse(Buffer.from((JSON.parse(await readFile(join(repoDir, 'manifests/hello-i686/1.json'), 'utf8')) as { payload: string }).payload, 'base64').toString()) as { disks: Array<{ index: string; size: number; chunkSize: number }> };
  const disk = manifest.disks[0]!;
  const node = await nodeMember();
  let fetched: ChannelPeer | undefined;
  for (let attempt = 0; attempt < 200 && !fetched; attempt++) {
    for (const peer of node.peers) {
      const ok = await peer.get({ id: disk.index, length: indexByteLength(disk.size, disk.chunkSize) }).then(() => true, () => false);
      if (ok) fetched = peer;
    }
    if (!fetched) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(fetched, 'a tab served the Node peer');

  // A page with a token in use (a private network's) stays out of the public swarm.
  const privatePage = await tabA.context().newPage();
  await privatePage.goto(`${hubUrl}/i/hello-i686/run?token=private`);
  await privatePage.waitForFunction(() => ['fetching', 'booting', 'ready', 'error'].includes(document.body.dataset.state ?? ''), undefined, { timeout: BOOT_TIMEOUT_MS });
  assert.equal(await privatePage.evaluate(() => (window as unknown as { hostmeRun: PageRun }).hostmeRun.peers), undefined);
  await privatePage.close();
});

test('a hostme share --webrtc process (Node, its own cache) serves a fresh Chromium profile: origin requests drop', { skip, timeout: 2 * BOOT_TIMEOUT_MS }, async (t) => {
  // Only the share process in the swarm: the earlier tabs and Node members leave.
  for (const s of swarms.splice(0)) s.close();
  for (const b of browsers.splice(0)) await b.close();
  const cache = new CacheDir(join(base, 'share-cache'));
  await cp(join(repoDir, 'objects'), join(cache.root, 'objects'), { recursive: true });
  await cache.saveManifest('http://origin', 'hello-i686', '1', (await openRepository(repoDir).loadImage('hello-i686', '1')).envelope);
  const share = await startCli(['share', 'http://origin', IMAGE, '--hub', hubUrl, '--cache', cache.root, '--host', '127.0.0.1', '--webrtc', '--json']);
  try {
    const before = originObjects;
    const tab = await openTab();
    assert.equal(await waitForRunState(tab, ['ready', 'error'], BOOT_TIMEOUT_MS, 500), 'ready', `tab: ${JSON.stringify(await runOf(tab))}`);
    const r = await runOf(tab);
    const objects = originObjects - before;
    assert.ok(r.listed >= 1, 'the hub introduced the tab to the share process');
    assert.ok((r.stats.peerObjects ?? 0) > objects, `most objects came from the Node peer: ${r.stats.peerObjects} from it, ${objects} from the origin (${JSON.stringify(r.skipped)})`);
    t.diagnostic(`origin objects: ${objects}; from the hostme share process: ${r.stats.peerObjects}; reads that left it: ${JSON.stringify(r.skipped)}`);
  } finally {
    await share.kill('SIGTERM');
  }
});
