/**
 * HostMe hosting end to end, all separate processes on loopback: one hub
 * (hostme serve --hub) and two nodes (hostme host, own homes and caches)
 * hosting examples/web in real QEMU VMs (TCG). Three boots in all.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { publishedWebSite, type PublishedWebSite } from '../testing/web-site.js';
import { killLeftoverVms, startCli, type CliProcess } from '../testing/cli-process.js';
import { runCli } from '../testing/published-guest.js';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { artifactsDir, launchChromium } from '../web/web-fixtures.js';
import { freeLoopbackPort } from './ports.js';

let site: PublishedWebSite;
let work: string;
let hub: CliProcess;
let hubPort: number;
const nodes: CliProcess[] = [];
const env = { HOSTME_ACCEL: process.env.HOSTME_ACCEL ?? 'tcg' };

before(async () => {
  site = await publishedWebSite();
  work = await tempDir('hostme-host-e2e-');
  hubPort = await freeLoopbackPort();
  hub = await startCli(['serve', site.repoDir, '--port', String(hubPort), '--hub', '--hub-state', join(work, 'hub.db'), '--json', '--quiet'], { env });
});

after(async () => {
  await Promise.all(nodes.map((n) => n.kill('SIGTERM')));
  await hub?.kill('SIGTERM');
  // A run that failed between kill -9 and the restart leaves node A's QEMU behind.
  if (work) {
    await killLeftoverVms(join(work, 'node-a'));
    await removeDir(work);
  }
});

const hubUrl = () => String(hub.info.url);

async function startNode(name: string, port = 0, extra: string[] = []): Promise<CliProcess> {
  const node = await startCli(['host', '--home', join(work, name), '--port', String(port), '--json', ...extra], { env });
  nodes.push(node);
  return node;
}

async function sites(node: CliProcess): Promise<Array<{ name: string; state: string; bytesFetched: number; hubConnected: boolean; requests: number }>> {
  const r = await fetch(`${String(node.info.url)}/api/sites`, { signal: AbortSignal.timeout(10_000) });
  return ((await r.json()) as { sites: [] }).sites;
}

async function hubNodes(): Promise<Array<{ id: string; ready: string[] }>> {
  const r = await fetch(`${hubUrl()}/api/hub/nodes`, { signal: AbortSignal.timeout(10_000) });
  return ((await r.json()) as { nodes: [] }).nodes;
}

/** Polls until check() returns a value (bounded). */
async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 240_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
}

async function get(path: string): Promise<{ status: number; node: string | null; body: string }> {
  const r = await fetch(`${hubUrl()}${path}`, { signal: AbortSignal.timeout(30_000) });
  return { status: r.status, node: r.headers.get('x-hostme-node'), body: await r.text() };
}

test('two nodes host examples/web through the hub; kill -9 of one loses no GET; the restarted node boots from its cache', async () => {
  // Before anyone hosts it: 503 with the HostMe button; an unknown site: 404.
  const offline = await get('/s/web/');
  assert.equal(offline.status, 503);
  assert.match(offline.body, /Host this site on my computer/);
  assert.equal((await get('/s/nosuchsite/')).status, 404);

  // Node A is added the way a visitor does it: the site's page offers "Host this site on my computer"
  // (the local node answered /api/hello), and the node's own page asks for confirmation.
  const aPort = await freeLoopbackPort();
  // --vga: A's site VM gets a VGA adapter, shown on its dashboard.
  const a = await startNode('node-a', aPort, ['--vga']);
  const nodeUrl = String(a.info.url);
  const browser = await launchChromium();
  const shots = await artifactsDir();
  try {
    const page = await browser.context.newPage();
    await page.goto(`${hubUrl()}/i/web`);
    // The visitor told the button where the node listens (the default is port 7480).
    await page.evaluate((url) => localStorage.setItem('hostme.node', url), nodeUrl);
    await page.reload();
    const offer = page.locator('#host-link');
    await offer.waitFor({ state: 'visible', timeout: 30_000 });
    await page.screenshot({ path: join(shots, 'host-1-site-page.png') });
    await offer.click();
    await page.waitForURL(`${nodeUrl}/add?**`, { timeout: 30_000 });
    await page.locator('#host-confirm').waitFor({ timeout: 30_000 });
    assert.match(await page.content(), /Host web on this computer\?/);
    await page.screenshot({ path: join(shots, 'host-2-confirm.png') });
    await page.click('#host-confirm');
    await page.waitForURL(`${nodeUrl}/`, { timeout: 30_000 });
    await page.locator('tr[data-site="web"]').waitFor({ timeout: 30_000 });
    await page.waitForFunction(() => document.querySelector('tr[data-site="web"]')?.textContent?.includes('running'), undefined, { timeout: 240_000, polling: 500 });
    await page.screenshot({ path: join(shots, 'host-3-dashboard.png') });
    // The site VM's serial console in xterm.js, over the dashboard's WebSocket: the guest names itself.
    await page.click('tr[data-site="web"] a.console');
    await page.waitForFunction(() => document.body.dataset.console === 'open', undefined, { timeout: 30_000 });
    await page.locator('#terminal').click();
    await page.keyboard.type('hostname\n');
    await page.waitForFunction((name) => (window as unknown as { hostmeConsole: { text(): string } }).hostmeConsole.text().split('\n').some((l) => l.trim() === name), site.guestHostname, { timeout: 60_000, polling: 300 });
    await page.screenshot({ path: join(shots, 'host-4-console.png') });
    // The VM's VGA screen (QMP screendump as PNG, refreshed about once a second).
    await page.goto(`${nodeUrl}/`);
    await page.click('tr[data-site="web"] a.screen', { timeout: 30_000 });
    await page.waitForFunction(() => document.body.dataset.screen === 'shown', undefined, { timeout: 60_000 });
    const size = await page.evaluate(() => { const img = document.getElementById('screen') as HTMLImageElement; return [img.naturalWidth, img.naturalHeight]; });
    assert.ok(size[0]! >= 320 && size[1]! >= 200, `a VGA-sized screen: ${size.join('x')}`);
    await page.screenshot({ path: join(shots, 'host-5-screen.png') });
  } finally {
    await browser.close();
  }
  const listed = await runCli(['host', 'ls', '--home', join(work, 'node-a'), '--json'], { env, timeoutMs: 30_000 });
  assert.match(listed.stdout, /"name": "web"/);

  const first = await until('the site through node A', async () => {
    const r = await get('/s/web/');
    return r.status === 200 ? r : undefined;
  });
  assert.match(first.body, new RegExp(`served by guest ${site.guestHostname}`), 'the page comes from the VM built from examples/web');
  assert.equal(first.node, String(a.info.node));
  // Host-header routing is off without --hub-domain; the path form keeps the query string.
  assert.equal((await get('/s/web/index.html?x=1')).status, 200);

  const b = await startNode('node-b');
  assert.equal((await runCli(['host', 'add', `${hubUrl()}/i/web`, '--home', join(work, 'node-b')], { env, timeoutMs: 30_000 })).code, 0);
  await until('both nodes ready at the hub', async () => ((await hubNodes()).filter((n) => n.ready.includes('web')).length === 2 ? true : undefined));
  const servedBy = new Set<string>();
  for (let i = 0; i < 20; i++) servedBy.add(String((await get('/s/web/')).node));
  assert.deepEqual([...servedBy].sort(), [String(a.info.node), String(b.info.node)].sort(), 'the load is spread over both nodes');

  // kill -9 node A while GETs keep coming: not one may fail.
  let failures = 0;
  let total = 0;
  const failed: string[] = [];
  const afterKill = new Set<string>();
  let killed = false;
  const load = (async () => {
    for (let i = 0; i < 150; i++) {
      const r = await get('/s/web/').catch((err: unknown) => ({ status: 0, node: null, body: String(err) }));
      total++;
      if (r.status !== 200) {
        failures++;
        failed.push(`${r.status} ${r.body.slice(0, 200)}`);
      }
      else if (killed) afterKill.add(String(r.node));
    }
  })();
  await new Promise((r) => setTimeout(r, 500));
  a.child.kill('SIGKILL');
  killed = true;
  await a.exited;
  await load;
  assert.equal(failures, 0, `${failures} of ${total} GETs failed across the kill: ${failed.join('; ')}`);
  assert.ok(afterKill.has(String(b.info.node)));

  // Restart A with the same home: it keeps its site list, re-registers and boots from its cache.
  const a2 = await startNode('node-a');
  assert.equal(a2.info.node, a.info.node, 'same identity key');
  const restarted = await until('node A serving again', async () => {
    const [web] = await sites(a2);
    return web?.state === 'running' && web.hubConnected ? web : undefined;
  });
  assert.equal(restarted.bytesFetched, 0, 'the restarted node fetched nothing: every chunk came from its cache');
  await until('node A ready at the hub again', async () => ((await hubNodes()).some((n) => n.id === a2.info.node && n.ready.includes('web')) ? true : undefined), 30_000);

  // The hub goes away: the nodes keep their VMs and reconnect with backoff when it is back.
  hub.child.kill('SIGKILL');
  await hub.exited;
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal((await sites(b))[0]?.state, 'running', 'the VM keeps running while the hub is unreachable');
  hub = await startCli(['serve', site.repoDir, '--port', String(hubPort), '--hub', '--hub-state', join(work, 'hub.db'), '--json', '--quiet'], { env });
  await until('both nodes back at the restarted hub', async () => ((await hubNodes()).filter((n) => n.ready.includes('web')).length === 2 ? true : undefined), 60_000);
  assert.equal((await get('/s/web/')).status, 200);

  // SIGTERM stops the VMs cleanly and the node exits 0.
  assert.equal(await b.kill('SIGTERM'), 0, b.stderr());
});
