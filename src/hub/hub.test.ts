/**
 * The hub's registry, gateway and tunnel over real loopback sockets (no VMs):
 * nodes are real TunnelClients whose "VM" is a local HTTP server.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import { connect } from 'node:net';
import { generateKeyPairSync } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { startRepoServer, type RunningRepoServer } from '../server/server.js';
import { makeDiskBytes, packWithNewKey, removeDir, run, tempDir, writeDisk } from '../testing/fixtures.js';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer as createH2Server } from 'node:http2';
import { repoSites } from './repo-sites.js';
import { TunnelClient } from '../host/tunnel-client.js';
import { Hub, type HubOptions } from './hub.js';
import { SqliteHubStore } from './hub-store.js';
import { CHALLENGE_PATH, TUNNEL_PATH, TUNNEL_PROTOCOL, signTunnelRequest, type SiteClaim } from './tunnel-protocol.js';

let dir: string;
const cleanups: Array<() => unknown> = [];
before(async () => {
  dir = await tempDir('hostme-hub-test-');
});
after(async () => {
  for (const c of cleanups.reverse()) await c();
  await removeDir(dir);
});

async function startHub(options: Partial<HubOptions> = {}): Promise<{ url: string; hub: Hub; server: RunningRepoServer }> {
  const hub = new Hub({ store: new SqliteHubStore(':memory:'), siteExists: async (s) => ['web', 'blog'].includes(s), ...options });
  const server = await startRepoServer({ repoDir: dir, hub });
  cleanups.push(() => server.close(), () => hub.close());
  return { url: server.url, hub, server };
}

/** A stand-in for a site VM: answers with its own name. */
async function backend(name: string): Promise<{ port: number; server: Server }> {
  const server = createServer((req, res) => {
    if (req.url === '/big') {
      res.end(Buffer.alloc(1 << 20, 7));
      return;
    }
    res.setHeader('content-type', 'text/plain');
    res.end(`${name} ${req.method} ${req.url}`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise((r) => server.close(r)));
  return { port: (server.address() as AddressInfo).port, server };
}

function node(hubUrl: string, sites: Record<string, number>, claims: SiteClaim[] = Object.keys(sites).map((site) => ({ site }))): TunnelClient {
  const key = generateKeyPairSync('ed25519');
  const client = new TunnelClient(hubUrl, key, { portOf: (s) => sites[s], ready: () => Object.keys(sites), counted: () => {} }, () => {});
  client.update(claims);
  cleanups.push(() => client.close());
  return client;
}

async function until<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = await check();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('timed out');
}

const readyAt = (hub: Hub, site: string, count = 1) => until(() => (hub.nodeList().filter((n) => n.ready.includes(site)).length >= count ? true : undefined));

test('unknown site 404, no live host 503 with the HostMe button; a node answers only for the sites it registered', async () => {
  const { url, hub } = await startHub();
  assert.equal((await fetch(`${url}/s/nope/`)).status, 404);
  const offline = await fetch(`${url}/s/web/`);
  assert.equal(offline.status, 503);
  assert.match(await offline.text(), /Host this site on my computer/);

  // This node registered for blog only; it would happily answer for web too.
  const blog = await backend('blog-vm');
  const x = node(url, { blog: blog.port, web: blog.port }, [{ site: 'blog' }]);
  await readyAt(hub, 'blog');
  const r = await fetch(`${url}/s/blog/a/b?c=d`);
  assert.equal(r.status, 200);
  assert.equal(await r.text(), 'blog-vm GET /a/b?c=d');
  assert.equal(r.headers.get('x-hostme-node'), x.nodeId);
  assert.equal((await fetch(`${url}/s/web/`)).status, 503, 'not registered for web: never asked');
  // Claims for sites the hub does not have are not admitted.
  const y = node(url, { nosuch: blog.port });
  await until(() => (y.connected ? true : undefined));
  assert.deepEqual(y.admitted, []);
});

test('a forged or replayed tunnel login is refused', async () => {
  const { url, hub } = await startHub();
  const key = generateKeyPairSync('ed25519');
  const other = generateKeyPairSync('ed25519');
  const nonce = async () => ((await (await fetch(`${url}${CHALLENGE_PATH}`)).json()) as { nonce: string }).nonce;
  const upgrade = (headers: object) =>
    new Promise<number>((resolve) => {
      const req = request(`${url}${TUNNEL_PATH}`, { headers: { ...headers, Connection: 'Upgrade', Upgrade: TUNNEL_PROTOCOL } });
      req.on('upgrade', (res, socket) => {
        socket.destroy();
        resolve(res.statusCode ?? 0);
      });
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', () => resolve(-1));
      req.end();
    });
  // Signed with another key than the one presented.
  const n1 = await nonce();
  const forged = { ...signTunnelRequest(other.privateKey, other.publicKey, n1, [{ site: 'web' }]), 'x-hostme-node-key': signTunnelRequest(key.privateKey, key.publicKey, n1, [{ site: 'web' }])['x-hostme-node-key'] };
  assert.equal(await upgrade(forged), 401);
  // Claims changed after signing.
  const n2 = await nonce();
  assert.equal(await upgrade({ ...signTunnelRequest(key.privateKey, key.publicKey, n2, [{ site: 'blog' }]), 'x-hostme-sites': JSON.stringify([{ site: 'web' }]) }), 401);
  // A made-up nonce, then a good login, then its replay.
  assert.equal(await upgrade(signTunnelRequest(key.privateKey, key.publicKey, 'made-up', [{ site: 'web' }])), 401);
  const n3 = await nonce();
  const good = signTunnelRequest(key.privateKey, key.publicKey, n3, [{ site: 'web' }]);
  assert.equal(await upgrade(good), 101);
  assert.equal(await upgrade(good), 401, 'a nonce works once');
  assert.ok(hub.nodeList().length <= 1);
});

test('hosting: invite admits only nodes with a valid token, each token bound to its first node', async () => {
  const store = new SqliteHubStore(':memory:');
  store.createInvite('web', 'invite-token-0123456789');
  const { url } = await startHub({ store, hosting: 'invite' });
  const vm = await backend('web-vm');
  const without = node(url, { web: vm.port });
  const withToken = node(url, { web: vm.port }, [{ site: 'web', invite: 'invite-token-0123456789' }]);
  await until(() => (without.connected && withToken.connected ? true : undefined));
  assert.deepEqual(without.admitted, []);
  assert.deepEqual(withToken.admitted, ['web']);
  const thief = node(url, { web: vm.port }, [{ site: 'web', invite: 'invite-token-0123456789' }]);
  await until(() => (thief.connected ? true : undefined));
  assert.deepEqual(thief.admitted, [], 'the token is already bound to another node');
});

test('a site whose manifest says hosting: invite needs an invite even on an open hub; other sites stay open', async () => {
  const repoDir = `${dir}/policy-repo`;
  await mkdir(repoDir, { recursive: true });
  const disk = await writeDisk(`${dir}/policy-disk.raw`, makeDiskBytes(1));
  const { key, repo } = await packWithNewKey(`${dir}`, repoDir, { disk, name: 'web' });
  const { packImage } = await import('../pack/pack-image.js');
  await packImage({ repo, workDir: dir, key, disk, name: 'blog', hosting: 'invite' });
  assert.equal((await repo.loadImage('blog', undefined)).manifest.hosting, 'invite');
  const store = new SqliteHubStore(':memory:');
  store.createInvite('blog', 'blog-invite-0123456789');
  const { url } = await startHub({ store, hosting: 'open', ...repoSites(repoDir) });
  const vm = await backend('vm');
  const uninvited = node(url, { web: vm.port, blog: vm.port });
  const invited = node(url, { web: vm.port, blog: vm.port }, [{ site: 'web' }, { site: 'blog', invite: 'blog-invite-0123456789' }]);
  await until(() => (uninvited.connected && invited.connected ? true : undefined));
  assert.deepEqual(uninvited.admitted, ['web'], 'the manifest asks for invitations: no token, no blog');
  assert.deepEqual(invited.admitted.sort(), ['blog', 'web']);
  // Nor a public swarm for it: the tracker refuses the invite-only image and serves the open one.
  const privatePeers = await fetch(`${url}/api/peers?image=blog@1`);
  assert.equal(privatePeers.status, 403);
  assert.match(await privatePeers.text(), /blog is invite-only/);
  assert.equal((await fetch(`${url}/api/peers?image=web@1`)).status, 200);
});

test('the hub trusts a node only for the sites it was admitted for, whatever the node says', async () => {
  const { url, hub } = await startHub();
  // A hand-made node that claims blog at login, then reports web ready too and answers anything.
  const key = generateKeyPairSync('ed25519');
  const { nonce } = (await (await fetch(`${url}${CHALLENGE_PATH}`)).json()) as { nonce: string };
  const asked: string[] = [];
  const liar = createH2Server((req, res) => {
    if (req.url === '/.hostme/status') {
      res.end(JSON.stringify({ ready: ['web', 'blog', 'nosuch'], inflight: 0 }));
      return;
    }
    asked.push(String(req.headers['x-hostme-site']));
    res.end('liar');
  });
  cleanups.push(() => liar.close());
  await new Promise<void>((resolve, reject) => {
    const req = request(`${url}${TUNNEL_PATH}`, { headers: { ...signTunnelRequest(key.privateKey, key.publicKey, nonce, [{ site: 'blog' }]), Connection: 'Upgrade', Upgrade: TUNNEL_PROTOCOL } });
    req.on('upgrade', (_res, socket, head) => {
      if (head.length) socket.unshift(head);
      cleanups.push(() => socket.destroy());
      liar.emit('connection', socket);
      resolve();
    });
    req.on('response', (res) => reject(new Error(`tunnel refused: ${res.statusCode}`)));
    req.end();
  });
  await readyAt(hub, 'blog');
  const [entry] = hub.nodeList();
  assert.deepEqual(entry!.ready, ['blog'], 'web and nosuch were never admitted');
  assert.equal((await fetch(`${url}/s/web/`)).status, 503);
  assert.equal(await (await fetch(`${url}/s/blog/`)).text(), 'liar');
  assert.deepEqual(asked, ['blog']);
});

test('load is spread; a failing node is skipped and an idempotent GET retried on another', async () => {
  const { url, hub } = await startHub();
  const good = await backend('good');
  const a = node(url, { web: good.port });
  // This node's "VM" port is closed: every request fails there.
  const dead = await backend('dead');
  await new Promise((r) => dead.server.close(r));
  dead.server.closeAllConnections();
  const b = node(url, { web: dead.port });
  await readyAt(hub, 'web', 2);
  let ok = 0;
  for (let i = 0; i < 20; i++) {
    const r = await fetch(`${url}/s/web/`);
    if (r.status === 200 && (await r.text()) === 'good GET /') ok++;
    assert.equal(r.headers.get('x-hostme-node'), a.nodeId);
  }
  assert.equal(ok, 20);
  assert.ok(b.nodeId);
  // 1 MiB streams through.
  const big = await fetch(`${url}/s/web/big`);
  assert.equal((await big.arrayBuffer()).byteLength, 1 << 20);
});

test('hostile clients are bounded: huge headers, oversized and slow bodies', async () => {
  const { url, hub, server } = await startHub({ maxRequestBytes: 1 << 20, maxInflight: 100 });
  server.server.headersTimeout = 2000;
  server.server.requestTimeout = 3000;
  const vm = await backend('web-vm');
  node(url, { web: vm.port });
  await readyAt(hub, 'web');
  const huge = await fetch(`${url}/s/web/`, { headers: { 'x-big': 'a'.repeat(100_000) } }).catch(() => undefined);
  assert.ok(huge === undefined || huge.status === 431, `huge headers: ${huge?.status}`);
  const tooBig = await fetch(`${url}/s/web/`, { method: 'POST', body: Buffer.alloc(2 << 20) }).catch(() => undefined);
  assert.ok(tooBig === undefined || tooBig.status === 413, `oversized body: ${tooBig?.status}`);
  // A slow body: headers, a few bytes, then silence. The hub must hang up.
  const { port } = new URL(url);
  const closedIn = await new Promise<number>((resolve) => {
    const started = Date.now();
    const socket = connect(Number(port), '127.0.0.1', () => socket.write('POST /s/web/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc'));
    socket.on('data', () => {});
    socket.on('close', () => resolve(Date.now() - started));
    socket.on('error', () => {});
    setTimeout(() => {
      socket.destroy();
      resolve(Infinity);
    }, 30_000).unref();
  });
  assert.ok(Number.isFinite(closedIn), 'the slow client was disconnected');
  // Slow headers (one header line a second, never finished): answered 408 or cut. Node enforces
  // headersTimeout on its connection check, every 30 s by default: bounded, not prompt.
  const slowHeaders = await new Promise<string>((resolve) => {
    let answer = '';
    const socket = connect(Number(port), '127.0.0.1', () => socket.write('GET /s/web/ HTTP/1.1\r\nHost: x\r\n'));
    const drip = setInterval(() => socket.write(`x-drip-${Date.now()}: 1\r\n`), 1000);
    socket.on('data', (d: Buffer) => (answer += d.toString()));
    socket.on('close', () => {
      clearInterval(drip);
      resolve(answer || 'closed');
    });
    socket.on('error', () => {});
    setTimeout(() => {
      socket.destroy();
      resolve('still open');
    }, 75_000).unref();
  });
  assert.ok(slowHeaders === 'closed' || /^HTTP\/1\.1 408/.test(slowHeaders), `slow headers: ${slowHeaders.slice(0, 80)}`);
  // Many small headers (within the byte limit, beyond the count the hub forwards): bounded answer, no crash.
  const many: Record<string, string> = {};
  for (let i = 0; i < 300; i++) many[`x-h${i}`] = '1';
  const manyAnswer = await fetch(`${url}/s/web/`, { headers: many }).catch(() => undefined);
  assert.ok(manyAnswer === undefined || [200, 431, 502, 503].includes(manyAnswer.status), `many headers: ${manyAnswer?.status}`);
  assert.equal((await fetch(`${url}/s/web/`)).status, 200, 'still serving afterwards');
});

test('thousands of requests keep one tunnel: answered streams are not reset (Node\'s rapid-reset guard would close the tunnel)', async () => {
  const { url, hub } = await startHub({ nodeRatePerSecond: 1_000_000 });
  const vm = await backend('web-vm');
  const x = node(url, { web: vm.port });
  await readyAt(hub, 'web');
  const [before] = hub.nodeList();
  const statuses = new Map<number, number>();
  const { Agent, request: get } = await import('node:http');
  const agent = new Agent({ keepAlive: true, maxSockets: 8 });
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let i = 0; i < 400; i++) {
        const status = await new Promise<number>((resolve) => {
          const req = get(`${url}/s/web/`, { agent }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          });
          req.on('error', () => resolve(0));
          req.end();
        });
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
      }
    }),
  );
  agent.destroy();
  assert.deepEqual([...statuses], [[200, 3200]]);
  const after = hub.nodeList();
  assert.equal(after.length, 1);
  assert.equal(after[0]!.since, before!.since, 'the same tunnel session throughout');
  assert.ok(x.connected);
});

test('1,000 concurrent gateway requests are all answered (200, or 503 beyond the in-flight limit) and none hangs', async () => {
  const { url, hub } = await startHub({ maxInflight: 100 });
  const vm = await backend('web-vm');
  node(url, { web: vm.port });
  await readyAt(hub, 'web');
  const errors = new Set<string>();
  // 1,000 at once: every one is answered (200, or 503 beyond the in-flight limit), none hangs.
  const statuses = await Promise.all(
    Array.from({ length: 1000 }, () =>
      fetch(`${url}/s/web/`, { signal: AbortSignal.timeout(60_000) }).then(
        async (r) => {
          await r.arrayBuffer();
          return r.status;
        },
        (err: Error) => {
          errors.add(String((err.cause as Error | undefined)?.message ?? err.message));
          return 0;
        },
      ),
    ),
  );
  const counts = statuses.reduce<Record<number, number>>((m, s) => ({ ...m, [s]: (m[s] ?? 0) + 1 }), {});
  assert.ok(statuses.every((s) => s === 200 || s === 503 || s === 429), `${JSON.stringify(counts)} ${[...errors].join('; ')}`);
  assert.ok((counts[200] ?? 0) > 0);
  assert.equal((await fetch(`${url}/s/web/`)).status, 200, 'still serving afterwards');
});

test('/install.sh is a valid shell script naming this hub; /hostme.tgz is the package given to the hub', async () => {
  const pkg = `${dir}/hostme-test.tgz`;
  await writeFile(pkg, Buffer.from('not really a tarball'));
  const { url } = await startHub({ packageFile: pkg });
  const script = await fetch(`${url}/install.sh`);
  assert.equal(script.status, 200);
  const text = await script.text();
  assert.match(text, new RegExp(`HUB=\\$\\{HOSTME_HUB:-'${url}'\\}`));
  assert.match(text, /npm install --global --prefix "\$PREFIX" "\$HUB\/hostme\.tgz"/);
  assert.match(text, /sudo apt-get install/);
  await writeFile(`${dir}/install.sh`, text);
  await run('sh', ['-n', `${dir}/install.sh`]);
  const tgz = await fetch(`${url}/hostme.tgz`);
  assert.equal(tgz.status, 200);
  assert.equal(await tgz.text(), 'not really a tarball');
  const { url: bare } = await startHub();
  assert.equal((await fetch(`${bare}/hostme.tgz`)).status, 404);
});

test('WebSocket upgrades pass through the gateway to the VM and back', async () => {
  const { WebSocket, WebSocketServer } = await import('ws');
  const { url, hub } = await startHub();
  const vm = await backend('web-vm');
  const wss = new WebSocketServer({ server: vm.server });
  wss.on('connection', (ws, req) => ws.on('message', (data: Buffer) => ws.send(`web-vm ${req.url} ${data.toString()}`)));
  cleanups.push(() => wss.close());
  const x = node(url, { web: vm.port });
  await readyAt(hub, 'web');
  const ws = new WebSocket(`${url.replace('http', 'ws')}/s/web/echo?q=1`);
  const reply = await new Promise<string>((resolve, reject) => {
    ws.on('open', () => ws.send('ping'));
    ws.on('message', (data: Buffer) => resolve(data.toString()));
    ws.on('error', reject);
  });
  assert.equal(reply, 'web-vm /echo?q=1 ping');
  ws.close();
  assert.ok(x.nodeId);
  const refused = await new Promise<number>((resolve) => {
    const other = new WebSocket(`${url.replace('http', 'ws')}/s/nope/`);
    other.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    other.on('error', () => resolve(-1));
  });
  assert.equal(refused, 404);
});

test('Host: SITE.DOMAIN routes to the site like /s/SITE/', async () => {
  const { url, hub } = await startHub({ domain: 'hub.example' });
  const vm = await backend('web-vm');
  node(url, { web: vm.port });
  await readyAt(hub, 'web');
  const get = (host: string, path: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(`${url}${path}`, { headers: { Host: host } }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
  assert.deepEqual(await get('web.hub.example:8080', '/a?b=1'), { status: 200, body: 'web-vm GET /a?b=1' });
  assert.equal((await get('nope.hub.example', '/')).status, 404);
  // Other hosts get the repository server (its index page), not a site.
  assert.equal((await get('hub.example', '/')).status, 200);
});
