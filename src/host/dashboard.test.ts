/**
 * The node's dashboard: the local-node probe answers any origin, nothing
 * changes without the node's own page (per-node secret + same Origin + own
 * Host), the add confirmation shows what is being hosted. No VM is booted
 * (maxVms 0). Also: --install / --uninstall in a temporary XDG home.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { RunningRepoServer } from '../server/server.js';
import { runCli } from '../testing/published-guest.js';
import { HostNode } from './node.js';
import { Dashboard } from './dashboard.js';
import { rawRequest, startDashboardFixture, type DashboardFixture } from './dashboard-fixtures.js';

let dir: string;
let repo: RunningRepoServer;
let node: HostNode;
let url: string;

let fixture: DashboardFixture;

before(async () => {
  fixture = await startDashboardFixture('hostme-dashboard-test-');
  ({ dir, repo, node, url } = fixture);
});
after(() => fixture?.close());

const raw = (method: string, path: string, headers: Record<string, string>, body = '') => rawRequest(url, method, path, headers, body);
const host = () => new URL(url).host;
const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();

test('/api/hello answers any origin, with the Private Network Access preflight', async () => {
  const pre = await raw('OPTIONS', '/api/hello', { Host: host(), Origin: 'https://some-site.example', 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Private-Network': 'true' });
  assert.equal(pre.status, 204);
  assert.equal(pre.headers['access-control-allow-private-network'], 'true');
  assert.equal(pre.headers['access-control-allow-origin'], '*');
  const hello = await raw('GET', '/api/hello', { Host: host(), Origin: 'https://some-site.example' });
  assert.equal(hello.status, 200);
  assert.equal(JSON.parse(hello.body).node, node.nodeId);
});

test('a site is added only by a same-origin POST carrying the node secret from the confirmation page', async () => {
  const link = `${repo.url}/i/web`;
  const page = await raw('GET', `/add?u=${encodeURIComponent(link)}`, { Host: host() });
  assert.equal(page.status, 200);
  assert.match(page.body, /Host web on this computer\?/);
  assert.match(page.body, /256 MiB memory/);
  const keyId = /<code>([^<]+)<\/code>/.exec(page.body)?.[1];
  assert.ok(keyId && keyId.length > 8, 'the publisher key is shown');
  const secret = /name="secret" value="([^"]+)"/.exec(page.body)?.[1];
  assert.ok(secret);
  const ctype = { 'content-type': 'application/x-www-form-urlencoded' };

  // Another web page posting to the node (with or without the secret) is refused.
  const crossOrigin = await raw('POST', '/api/sites', { ...ctype, Host: host(), Origin: 'https://evil.example' }, form({ u: link, secret }));
  assert.equal(crossOrigin.status, 403);
  const crossSite = await raw('POST', '/api/sites', { ...ctype, Host: host(), Origin: new URL(url).origin, 'Sec-Fetch-Site': 'cross-site' }, form({ u: link, secret }));
  assert.equal(crossSite.status, 403);
  const noOrigin = await raw('POST', '/api/sites', { ...ctype, Host: host() }, form({ u: link, secret }));
  assert.equal(noOrigin.status, 403);
  // Same origin but no confirmation (no secret, a wrong one).
  assert.equal((await raw('POST', '/api/sites', { ...ctype, Host: host(), Origin: new URL(url).origin }, form({ u: link }))).status, 403);
  assert.equal((await raw('POST', '/api/sites', { ...ctype, Host: host(), Origin: new URL(url).origin }, form({ u: link, secret: secret.replace(/.$/, (c) => (c === 'a' ? 'b' : 'a')) }))).status, 403);
  // DNS rebinding: evil.example resolving to 127.0.0.1 still sends its own Host.
  assert.equal((await raw('GET', '/api/sites', { Host: 'evil.example' })).status, 403);
  assert.equal((await raw('POST', '/api/sites', { ...ctype, Host: 'evil.example', Origin: 'http://evil.example' }, form({ u: link, secret }))).status, 403);
  assert.deepEqual(node.store.list(), [], 'nothing was added');

  const ok = await raw('POST', '/api/sites', { ...ctype, Host: host(), Origin: new URL(url).origin, 'Sec-Fetch-Site': 'same-origin' }, form({ u: link, secret }));
  assert.equal(ok.status, 201, ok.body);
  const [site] = node.store.list();
  assert.equal(site?.name, 'web');
  assert.equal(site?.hub, new URL(repo.url).origin);
  const listed = JSON.parse((await raw('GET', '/api/sites', { Host: host() })).body) as { sites: Array<{ name: string }> };
  assert.deepEqual(listed.sites.map((s) => s.name), ['web']);
  // Removal needs the same proof.
  assert.equal((await raw('POST', '/api/sites/web/remove', { ...ctype, Host: host(), Origin: 'https://evil.example' }, form({ secret }))).status, 403);
  assert.equal((await raw('POST', '/api/sites/web/remove', { ...ctype, Host: host(), Origin: new URL(url).origin }, form({ secret }))).status, 200);
  assert.deepEqual(node.store.list(), []);
});

test('the disk-cache limit: an add that would exceed it is refused with the reason, and a full cache boots no VM', async () => {
  // A node whose cache already holds 3 MiB of a site's overlay, with a 2 MiB limit.
  const small = new HostNode({ home: join(dir, 'small'), limits: { maxVms: 1, maxCacheMiB: 2 }, log: () => {} });
  await mkdir(join(small.home.cacheDir, 'instances', 'site-old'), { recursive: true });
  await writeFile(join(small.home.cacheDir, 'instances', 'site-old', 'overlay.data'), Buffer.alloc(3 << 20, 1));
  const smallDash = new Dashboard(small);
  const smallUrl = await smallDash.listen(0);
  small.start();
  try {
    const smallHost = new URL(smallUrl).host;
    const link = `${repo.url}/i/web`;
    const post = (body: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request(`${smallUrl}/api/sites`, { method: 'POST', headers: { Host: smallHost, Origin: smallUrl, 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(Buffer.byteLength(body)) } }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        });
        req.on('error', reject);
        req.end(body);
      });
    const refused = await post(form({ u: link, secret: small.home.secret }));
    assert.equal(refused.status, 507, refused.body);
    assert.match(JSON.parse(refused.body).message, /web not added: this node's disk cache would exceed its limit \(3\.0 MiB used \+ [\d.]+ MiB needed > 2\.0 MiB/);
    assert.deepEqual(small.store.list(), []);
    // Added behind the dashboard's back (hostme host add): the node does not boot it.
    small.store.add({ name: 'web', repo: repo.url, image: 'web', hub: new URL(repo.url).origin, guestPort: 80 });
    const state = await (async () => {
      for (let i = 0; i < 100; i++) {
        const [s] = small.status();
        if (s?.state === 'failed') return s;
        await new Promise((r) => setTimeout(r, 100));
      }
      return small.status()[0];
    })();
    assert.equal(state?.state, 'failed');
    assert.match(state?.error ?? '', /not started: this node's disk cache would exceed its limit/);
    assert.equal(small.vm('web')?.vm, undefined, 'no QEMU was started');
  } finally {
    await smallDash.close();
    await small.stop();
  }
});

test('the dashboard is an installable app: manifest and icon', async () => {
  const manifest = JSON.parse((await raw('GET', '/manifest.webmanifest', { Host: host() })).body) as { display: string; icons: unknown[] };
  assert.equal(manifest.display, 'standalone');
  assert.ok(manifest.icons.length > 0);
  assert.match((await raw('GET', '/icon.svg', { Host: host() })).body, /<svg/);
  const index = await raw('GET', '/', { Host: host() });
  assert.match(String(index.headers['content-security-policy']), /frame-ancestors 'none'/);
});

test('hostme host --install writes a systemd user unit and an autostart entry with an icon; --uninstall removes them', async () => {
  const home = join(dir, 'fake-home');
  const env = { HOME: home, XDG_CONFIG_HOME: join(home, 'config'), XDG_DATA_HOME: join(home, 'data') };
  const installed = await runCli(['host', '--install', '--home', join(dir, 'svc-home'), '--json'], { env, timeoutMs: 60_000 });
  assert.equal(installed.code, 0, installed.stderr);
  const unit = await readFile(join(home, 'config', 'systemd', 'user', 'hostme-host.service'), 'utf8');
  assert.match(unit, /ExecStart=.*bin\/hostme\.js host --home .*svc-home/);
  assert.match(unit, /WantedBy=default.target/);
  const desktop = await readFile(join(home, 'config', 'autostart', 'hostme-host.desktop'), 'utf8');
  const icon = /^Icon=(.*)$/m.exec(desktop)?.[1];
  assert.ok(icon && existsSync(icon), 'the icon the entry names exists');
  const removed = await runCli(['host', '--uninstall', '--json'], { env, timeoutMs: 60_000 });
  assert.equal(removed.code, 0, removed.stderr);
  assert.ok(!existsSync(join(home, 'config', 'systemd', 'user', 'hostme-host.service')));
  assert.ok(!existsSync(join(home, 'config', 'autostart', 'hostme-host.desktop')));
});

test('the console WebSocket is refused to other origins, other Hosts and without the secret', async () => {
  // The VGA screen: the secret is needed; without a running VM there is nothing to show.
  assert.equal((await raw('GET', '/api/sites/web/screen.png', { Host: host() })).status, 403);
  assert.equal((await raw('GET', `/api/sites/web/screen.png?secret=${encodeURIComponent(node.home.secret)}`, { Host: 'evil.example' })).status, 403);
  assert.equal((await raw('GET', `/api/sites/web/screen.png?secret=${encodeURIComponent(node.home.secret)}`, { Host: host() })).status, 409);
  const { WebSocket } = await import('ws');
  const attempt = (headers: Record<string, string>, secret: string) =>
    new Promise<number>((resolve) => {
      const ws = new WebSocket(`${url.replace('http', 'ws')}/api/sites/web/console?secret=${encodeURIComponent(secret)}`, { headers });
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => {
        ws.close();
        resolve(101);
      });
      ws.on('error', () => resolve(-1));
    });
  const own = new URL(url).origin;
  assert.equal(await attempt({ Origin: 'https://evil.example' }, node.home.secret), 403);
  assert.equal(await attempt({ Origin: own, Host: 'evil.example' }, node.home.secret), 403);
  assert.equal(await attempt({ Origin: own }, 'wrong'), 403);
  // With every proof, it gets as far as "no VM running" (maxVms 0 here).
  assert.equal(await attempt({ Origin: own }, node.home.secret), 409);
});
