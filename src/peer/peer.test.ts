import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cp, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { encodeObject, nodeCodecs } from '../format/node/codecs.js';
import { objectPath } from '../format/digest.js';
import { MirrorGroup } from '../store/mirror-group.js';
import { TransportStore } from '../store/transport-store.js';
import { HttpTransport } from '../store/http-transport.js';
import { CacheDir } from '../runner/cache-dir.js';
import { makeDiskBytes, packWithNewKey, removeDir, tempDir, writeDisk } from '../testing/fixtures.js';
import { Tracker } from './tracker.js';
import { TrackerClient } from './tracker-client.js';
import { ShareCatalog } from './catalog.js';
import { PeerHttpServer } from './http-server.js';
import { HttpPeerSource } from './peer-source.js';
import { dialable, isPrivateIp, onLocalNet, sameSubnet } from './address.js';

let work: string;
const servers: Server[] = [];

before(async () => {
  work = await tempDir('hostme-peer-');
});
after(async () => {
  for (const s of servers) s.closeAllConnections();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  await removeDir(work);
});

async function serve(handler: Parameters<typeof createServer>[1]): Promise<string> {
  const server = createServer(handler);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function trackerAt(options: Partial<ConstructorParameters<typeof Tracker>[0]> = {}): Promise<{ url: string; tracker: Tracker }> {
  const tracker = new Tracker({ imageExists: async (n) => n === 'hello', publicSwarm: true, ...options });
  const url = await serve((req, res) => {
    if (!tracker.handle(req, res)) res.writeHead(404).end();
  });
  return { url, tracker };
}

async function post(url: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await fetch(url, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  return { status: r.status, json: (await r.json()) as Record<string, unknown> };
}

test('address rules: private ranges, subnets, what a runner may dial', () => {
  for (const ip of ['10.0.0.1', '192.168.1.9', '172.20.0.1', '127.0.0.1', '169.254.1.1', '::1', 'fd00::1', 'fe80::1']) assert.equal(isPrivateIp(ip), true, ip);
  for (const ip of ['8.8.8.8', '172.32.0.1', '2001:db8::1']) assert.equal(isPrivateIp(ip), false, ip);
  assert.equal(sameSubnet('192.168.1.2', '192.168.1.200'), true);
  assert.equal(sameSubnet('192.168.1.2', '192.168.2.2'), false);
  const nets = [{ address: '192.168.1.5', netmask: '255.255.255.0' }];
  assert.equal(onLocalNet('192.168.1.77', nets), true);
  assert.equal(dialable('192.168.1.77', 8080, nets), true);
  assert.equal(dialable('10.9.9.9', 8080, nets), false, 'a private address off our LAN');
  assert.equal(dialable('8.8.8.8', 8080, nets), true);
  for (const [a, p] of [['8.8.8.8', 0], ['8.8.8.8', 70000], ['224.0.0.1', 80], ['0.0.0.0', 80], ['example.com', 80], ['file:///etc/passwd', 80]] as const) assert.equal(dialable(a, p, nets), false, `${a}:${p}`);
});

test('tracker: the announcing address is recorded, LAN first, private peers only on the asker LAN, expiry, reports', async () => {
  const { url, tracker } = await trackerAt({ intervalSeconds: 0.2 });
  const announced = await post(`${url}/api/peers/announce`, { port: 4000, images: ['hello@1'], address: '8.8.8.8' });
  assert.equal(announced.status, 200);
  assert.equal(announced.json.address, '127.0.0.1', 'the claimed address is ignored');
  await post(`${url}/api/peers/announce`, { port: 4001, images: ['hello@1'] });
  const list = (await (await fetch(`${url}/api/peers?image=hello@1`)).json()) as { peers: Array<{ address: string; port: number; lan: boolean }> };
  assert.deepEqual(list.peers.map((p) => p.port).sort(), [4000, 4001]);
  assert.ok(list.peers.every((p) => p.address === '127.0.0.1' && p.lan));
  assert.deepEqual(tracker.lookup('hello@1', '8.8.4.4'), [], 'loopback peers are not handed to a WAN asker');
  // Hostile input: unknown image, bad names, bad ports, oversized bodies.
  assert.equal((await post(`${url}/api/peers/announce`, { port: 4002, images: ['other@1'] })).status, 404);
  assert.equal((await post(`${url}/api/peers/announce`, { port: 4002, images: ['../x@1'] })).status, 400);
  assert.equal((await post(`${url}/api/peers/announce`, { port: 0, images: ['hello@1'] })).status, 400);
  assert.equal((await fetch(`${url}/api/peers/announce`, { method: 'POST', body: 'x'.repeat(10_000) })).status, 413);
  assert.equal((await fetch(`${url}/api/peers?image=hello`)).status, 400);
  // A report hides the peer from the reporter.
  await post(`${url}/api/peers/report`, { address: '127.0.0.1', port: 4000, reason: 'wrong bytes' });
  assert.deepEqual(tracker.lookup('hello@1', '127.0.0.1').map((p) => p.port), [4001]);
  // Without heartbeats, peers expire (3 intervals).
  await new Promise((r) => setTimeout(r, 800));
  assert.equal(tracker.lookup('hello@1', '127.0.0.1').length, 0);
  // A flood is cut off (20 POSTs per second per address): bursts of 50 until one is refused, at most 4.
  const codes: unknown[] = [];
  for (let burst = 0; burst < 4 && !codes.includes('rate-limited'); burst++) {
    codes.push(...(await Promise.all(Array.from({ length: 50 }, () => post(`${url}/api/peers/report`, { address: '127.0.0.1', port: 1 }).then((r) => r.json.error)))));
  }
  assert.ok(codes.includes('rate-limited'), `answers ${[...new Set(codes)].join(',')}`);
  // At most 16 ports per address.
  await new Promise((r) => setTimeout(r, 1100));
  const ports = await Promise.all(Array.from({ length: 17 }, (_, i) => post(`${url}/api/peers/announce`, { port: 6000 + i, images: ['hello@1'] }).then((r) => r.json.error)));
  assert.ok(ports.includes('too-many-ports'), `answers ${[...new Set(ports)].join(',')}`);
});

test('tracker: invite-only hubs have no public swarm', async () => {
  const { url } = await trackerAt({ publicSwarm: false });
  assert.equal((await fetch(`${url}/api/peers?image=hello@1`)).status, 403);
  assert.equal((await post(`${url}/api/peers/announce`, { port: 4000, images: ['hello@1'] })).status, 403);
});

test('tracker client: hostile answers are filtered, redirects are not followed', async () => {
  const hostile = await serve((req, res) => {
    const peers = [
      { address: 'file:///etc/passwd', port: 80 },
      { address: 'evil.example', port: 80 },
      { address: '10.66.66.66', port: 80 },
      { address: '224.0.0.1', port: 80 },
      { address: '8.8.8.8', port: 123456 },
      { address: '127.0.0.1', port: 4000, lan: true },
      { address: '127.0.0.1', port: 4000, lan: true },
      { address: '::ffff:127.0.0.1', port: 4001 },
    ];
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ peers }));
  });
  const nets = [{ address: '127.0.0.1', netmask: '255.0.0.0' }];
  const peers = await new TrackerClient(hostile).peers('hello@1', { nets });
  assert.deepEqual(peers.map((p) => `${p.address}:${p.port}`), ['127.0.0.1:4000', '127.0.0.1:4001']);
  const redirecting = await serve((_req, res) => void res.writeHead(302, { location: `${hostile}/api/peers?image=hello@1` }).end());
  assert.deepEqual(await new TrackerClient(redirecting).peers('hello@1', { nets }), [], 'a redirect is not followed');
  assert.throws(() => new TrackerClient('file:///etc/passwd'), /http/);
});

test('peer server: only objects of shared images, ids validated, read-only, rate-limited', async () => {
  const repoDir = join(work, 'repo');
  const disk = await writeDisk(join(work, 'disk.raw'), makeDiskBytes(2, 7));
  const { repo } = await packWithNewKey(join(work, 'pack'), repoDir, { disk, name: 'hello', version: '1' });
  const image = await repo.loadImage('hello', '1');
  const cache = new CacheDir(join(work, 'cache'));
  await cp(join(repoDir, 'objects'), join(cache.root, 'objects'), { recursive: true });
  await cache.saveManifest('http://origin', 'hello', '1', image.envelope);
  // An object of some other (private) image that happens to be cached here.
  const secret = encodeObject(new TextEncoder().encode('private image chunk'));
  await cache.objects.put(secret.id, secret.stored);
  const server = new PeerHttpServer(new ShareCatalog(cache, [{ repo: 'http://origin', name: 'hello', version: '1' }]), { host: '127.0.0.1', ratePerSecond: 20 });
  const port = await server.listen();
  try {
    const base = `http://127.0.0.1:${port}`;
    const diskRef = image.manifest.disks[0]!;
    const ok = await fetch(`${base}/${objectPath(diskRef.index)}`);
    assert.equal(ok.status, 200);
    assert.deepEqual(new Uint8Array(await ok.arrayBuffer()), new Uint8Array(await readFile(join(repoDir, objectPath(diskRef.index)))));
    assert.equal((await fetch(`${base}/${objectPath(secret.id)}`)).status, 404, 'objects of unshared images are not served');
    assert.equal((await fetch(`${base}/manifests/hello/1`)).status, 200);
    assert.equal((await fetch(`${base}/manifests/hello/2`)).status, 404);
    for (const path of ['/objects/../images', '/objects/aa/../../trust.json', '/trust.json', `/objects/ff/${diskRef.index}`, '/objects/ab/XYZ', '/instances/x', '/%2e%2e/trust.json']) {
      assert.equal((await fetch(`${base}${path}`)).status, 404, path);
    }
    assert.equal((await fetch(`${base}/${objectPath(diskRef.index)}`, { method: 'PUT', body: 'x' })).status, 405);
    const burst = await Promise.all(Array.from({ length: 80 }, () => fetch(`${base}/manifests/hello/1`).then((r) => r.status)));
    assert.ok(burst.includes(429), 'a flood is rate-limited');
  } finally {
    await server.close();
  }
});

test('mirror group: a lying peer is dropped and reported, a slow peer loses the demand read to the origin, prefetch prefers peers', async () => {
  const honest = encodeObject(makeDiskBytes(1, 3).subarray(0, 256 * 1024));
  const second = encodeObject(makeDiskBytes(1, 4).subarray(0, 256 * 1024));
  const counts = { origin: 0, liar: 0, slow: 0, good: 0 };
  const store = new Map([honest, second].map((o) => [o.id, o.stored]));
  const body = (path: string | undefined) => store.get((path ?? '').split('/').pop() ?? '');
  const origin = await serve((req, res) => {
    counts.origin++;
    const b = body(req.url);
    if (b) res.writeHead(200).end(b);
    else res.writeHead(404).end();
  });
  const liar = await serve((req, res) => {
    counts.liar++;
    res.writeHead(200).end(Buffer.alloc(body(req.url)?.length ?? 10, 7));
  });
  const slow = await serve(() => {
    counts.slow++; // never answers
  });
  const good = await serve((req, res) => {
    counts.good++;
    const b = body(req.url);
    if (b) res.writeHead(200).end(b);
    else res.writeHead(404).end();
  });
  const port = (u: string) => Number(new URL(u).port);
  const group = new MirrorGroup([new TransportStore(new HttpTransport(origin, { retries: 0 }), nodeCodecs)]);
  const dropped: Array<{ reason: string; wrongBytes: boolean }> = [];
  group.addPeers([new HttpPeerSource('127.0.0.1', port(liar))], { latencyMs: 1, onDropped: (reason, wrongBytes) => dropped.push({ reason, wrongBytes }) });
  const got = await group.get({ id: honest.id, length: honest.length });
  assert.equal(got.source, origin);
  assert.equal(dropped.length, 1);
  assert.equal(dropped[0]!.wrongBytes, true);
  assert.ok(!group.ranking().some((m) => m.kind === 'peer'), 'the liar is out of the group');

  group.addPeers([new HttpPeerSource('127.0.0.1', port(slow))], { latencyMs: 1, windowMs: 300 });
  const started = performance.now();
  const viaOrigin = await group.get({ id: second.id, length: second.length });
  assert.equal(viaOrigin.source, origin, 'the demand read moved on to the origin');
  assert.equal(counts.slow, 1);
  assert.ok(performance.now() - started < 14_000, 'moved on long before the peer transport timeout');

  const prefetchGroup = new MirrorGroup([new TransportStore(new HttpTransport(origin, { retries: 0 }), nodeCodecs)]);
  prefetchGroup.addPeers([new HttpPeerSource('127.0.0.1', port(good))], { latencyMs: 500 });
  const originBefore = counts.origin;
  const prefetched = await prefetchGroup.get({ id: honest.id, length: honest.length }, { priority: 'prefetch' });
  assert.match(prefetched.source, /^peer /);
  assert.equal(counts.origin, originBefore);
});
