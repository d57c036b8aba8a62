/**
 * LAN nodes: a node listening on a LAN address (here 127.0.0.2, a loopback
 * alias, standing in for 192.168.x.y) answers the HostMe button only for the
 * page origins it was given, shows nothing to a browser that is not paired,
 * and adds a site only from a paired browser through its own confirmation
 * page. In Chromium: the landing page's LAN node field, the pairing page,
 * the confirmation. No VM is booted (maxVms 0).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { RunningRepoServer } from '../server/server.js';
import { artifactsDir, launchChromium } from '../web/web-fixtures.js';
import type { HostNode } from './node.js';
import { Dashboard } from './dashboard.js';
import { rawRequest, startDashboardFixture, type DashboardFixture } from './dashboard-fixtures.js';

let repo: RunningRepoServer;
let node: HostNode;
let local: string;
let lan: string;

let fixture: DashboardFixture;

before(async () => {
  fixture = await startDashboardFixture('hostme-lan-test-', async (f) => {
    lan = await f.dashboard.listenLan({ address: '127.0.0.2', port: 0, allowOrigins: [new URL(f.repo.url).origin] });
  });
  ({ repo, node, url: local } = fixture);
});
after(() => fixture?.close());

const raw = rawRequest;

test('the LAN listener: /api/hello only for the configured page origins; nothing without pairing; a wildcard address is refused', async () => {
  const host = new URL(lan).host;
  const site = new URL(repo.url).origin;
  const allowed = await raw(lan, 'OPTIONS', '/api/hello', { Host: host, Origin: site, 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Private-Network': 'true' });
  assert.equal(allowed.headers['access-control-allow-origin'], site);
  assert.equal(allowed.headers['access-control-allow-private-network'], 'true');
  const other = await raw(lan, 'GET', '/api/hello', { Host: host, Origin: 'https://some-site.example' });
  assert.equal(other.headers['access-control-allow-origin'], undefined, 'other pages cannot read the LAN probe');
  assert.equal((await raw(local, 'GET', '/api/hello', { Origin: 'https://some-site.example' })).headers['access-control-allow-origin'], '*', 'loopback unchanged');

  const secret = node.home.secret;
  const index = await raw(lan, 'GET', '/', { Host: host });
  assert.equal(index.status, 401);
  assert.ok(!index.body.includes(secret), 'an unpaired LAN browser never sees the node secret');
  assert.ok(!index.body.includes(node.home.lanKey));
  const addPage = await raw(lan, 'GET', `/add?u=${encodeURIComponent(`${repo.url}/i/web`)}`, { Host: host });
  assert.equal(addPage.status, 401);
  assert.ok(!addPage.body.includes(secret));
  assert.equal((await raw(lan, 'GET', '/pair?key=wrong', { Host: host })).status, 403);
  // The right key sets an HttpOnly cookie and goes on to a same-origin path only (no open redirect).
  const paired = await raw(lan, 'GET', `/pair?key=${encodeURIComponent(node.home.lanKey)}&next=${encodeURIComponent('//evil.example/')}`, { Host: host });
  assert.equal(paired.status, 303);
  assert.equal(paired.headers.location, '/');
  assert.match(String(paired.headers['set-cookie']), /hostme-lan=.*HttpOnly; SameSite=Lax/);
  const ctype = { 'content-type': 'application/x-www-form-urlencoded' };
  const form = new URLSearchParams({ u: `${repo.url}/i/web`, secret }).toString();
  // Even with the secret: no pairing cookie, or another origin, or another Host → refused.
  assert.equal((await raw(lan, 'POST', '/api/sites', { ...ctype, Host: host, Origin: lan }, form)).status, 403);
  const cookie = `hostme-lan=${node.home.lanKey}`;
  assert.equal((await raw(lan, 'POST', '/api/sites', { ...ctype, Host: host, Origin: 'https://evil.example', Cookie: cookie }, form)).status, 403);
  assert.equal((await raw(lan, 'POST', '/api/sites', { ...ctype, Host: 'evil.example', Origin: 'http://evil.example', Cookie: cookie }, form)).status, 403);
  assert.equal((await raw(lan, 'POST', '/api/sites', { ...ctype, Host: host, Origin: local, Cookie: cookie }, form)).status, 403, 'the loopback origin is not the LAN listener\'s');
  // The console WebSocket over the LAN needs the pairing too.
  const ws = await raw(lan, 'GET', `/api/sites/web/console?secret=${secret}`, { Host: host, Origin: lan, Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' }).catch(() => ({ status: -1 }));
  assert.equal(ws.status, 403);
  assert.deepEqual(node.store.list(), []);

  await assert.rejects(new Dashboard(node).listenLan({ address: '0.0.0.0', port: 0, allowOrigins: [] }), /not a wildcard/);
});

test('in Chromium: the landing page offers "Host this site" on the LAN node the user set; pairing, then confirmation on the node\'s page', async () => {
  const browser = await launchChromium();
  const shots = await artifactsDir();
  try {
    const page = await browser.context.newPage();
    await page.goto(`${repo.url}/i/web`);
    await page.click('#lan-node summary');
    await page.fill('#lan-node-address', 'http://8.8.8.8:7481');
    await page.click('#lan-node-save');
    await page.waitForFunction(() => document.getElementById('lan-node-status')?.textContent?.includes('not a LAN address'), undefined, { timeout: 10_000 });
    await page.fill('#lan-node-address', lan);
    await page.click('#lan-node-save');
    const offer = page.locator('#host-link-lan');
    await offer.waitFor({ state: 'visible', timeout: 30_000 });
    assert.equal(await page.evaluate(() => localStorage.getItem('hostme.lan-node')), lan, 'stored in the browser');
    await page.screenshot({ path: join(shots, 'host-lan-1-site-page.png') });
    // Stored: a reload offers it again without typing.
    await page.reload();
    await page.locator('#host-link-lan').waitFor({ state: 'visible', timeout: 30_000 });
    await page.click('#host-link-lan');
    await page.waitForURL(`${lan}/add?**`, { timeout: 30_000 });
    await page.locator('#pair-key').waitFor({ timeout: 10_000 });
    assert.doesNotMatch(await page.content(), /Host web on this computer/);
    await page.screenshot({ path: join(shots, 'host-lan-2-pair.png') });
    // The owner reads the pairing key on the node's own (loopback) dashboard.
    const owner = await browser.context.newPage();
    await owner.goto(`${local}/`);
    const pairLink = await owner.locator('#lan-pair-link').getAttribute('href');
    assert.ok(pairLink?.startsWith(`${lan}/pair?key=`));
    const key = new URL(pairLink!).searchParams.get('key')!;
    await owner.close();
    await page.fill('#pair-key', key);
    await page.click('#pair button[type=submit]');
    await page.locator('#host-confirm').waitFor({ timeout: 30_000 });
    assert.match(await page.content(), /Host web on this computer\?/);
    await page.screenshot({ path: join(shots, 'host-lan-3-confirm.png') });
    await page.click('#host-confirm');
    await page.waitForURL(`${lan}/`, { timeout: 30_000 });
    await page.locator('tr[data-site="web"]').waitFor({ timeout: 30_000 });
    await page.screenshot({ path: join(shots, 'host-lan-4-dashboard.png') });
    assert.deepEqual(node.store.list().map((s) => s.name), ['web']);
  } finally {
    await browser.close();
  }
});
