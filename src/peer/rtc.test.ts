import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cp } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeIndex, chunkLength, indexByteLength, isHole } from '../format/chunk-index.js';
import { MirrorGroup } from '../store/mirror-group.js';
import { nodeCodecs } from '../format/node/codecs.js';
import { TransportStore } from '../store/transport-store.js';
import { HttpTransport } from '../store/http-transport.js';
import { CacheDir } from '../runner/cache-dir.js';
import { makeDiskBytes, packWithNewKey, removeDir, tempDir, writeDisk } from '../testing/fixtures.js';
import { startCli, type CliProcess } from '../testing/cli-process.js';
import { startRepoServer } from '../server/server.js';
import type { Repository } from '../repo/repository.js';
import type { LoadedImage } from '../repo/repository.js';
import { ShareCatalog } from './catalog.js';
import { RtcSwarm } from './rtc.js';
import { closeNodeRtc, nodeRtcEnvironment } from './node-rtc.js';
import type { ChannelPeer } from './channel-peer.js';
import { encodeResponse, decodeResponse, Reassembly } from './wire.js';

// Node ↔ Node over real WebRTC data channels (node-datachannel), signaled by
// a real hub process (hostme serve --hub) on loopback.
let work: string;
let hub: CliProcess;
let repo: Repository;
let repoDir: string;
let image: LoadedImage;
let cache: CacheDir;
const swarms: RtcSwarm[] = [];

before(async () => {
  work = await tempDir('hostme-rtc-');
  repoDir = join(work, 'repo');
  const disk = await writeDisk(join(work, 'disk.raw'), makeDiskBytes(2, 11));
  ({ repo } = await packWithNewKey(join(work, 'pack'), repoDir, { disk, name: 'hello', version: '1' }));
  image = await repo.loadImage('hello', '1');
  cache = new CacheDir(join(work, 'cache'));
  await cp(join(repoDir, 'objects'), join(cache.root, 'objects'), { recursive: true });
  await cache.saveManifest('http://origin', 'hello', '1', image.envelope);
  hub = await startCli(['serve', repoDir, '--port', '0', '--hub', '--hub-state', join(work, 'hub.db'), '--json', '--quiet']);
});

after(async () => {
  for (const s of swarms) s.close();
  await hub?.kill('SIGKILL');
  await closeNodeRtc();
  await removeDir(work);
});

test('wire: responses are split to the message size and reassembled in order; inconsistent frames are refused', () => {
  const body = makeDiskBytes(1, 5).subarray(0, 100_000);
  const frames = encodeResponse(7, body, 16 * 1024);
  assert.ok(frames.length >= 7 && frames.every((f) => f.length <= 16 * 1024));
  const whole = new Reassembly(1 << 20);
  let out: Uint8Array | undefined;
  for (const f of frames) {
    const frame = decodeResponse(f);
    assert.equal(frame?.kind, 'data');
    if (frame?.kind === 'data') out = whole.add(frame);
  }
  assert.deepEqual(out, body);
  const small = new Reassembly(1000);
  const first = decodeResponse(frames[0]!);
  assert.throws(() => first?.kind === 'data' && small.add(first), /limit/);
  const skip = new Reassembly(1 << 20);
  const second = decodeResponse(frames[1]!);
  assert.throws(() => second?.kind === 'data' && skip.add(second), /order/);
});

function waitForPeer(options: Omit<ConstructorParameters<typeof RtcSwarm>[1], 'hub' | 'image' | 'onPeer' | 'codecs'>, env: Awaited<ReturnType<typeof nodeRtcEnvironment>>): { swarm: RtcSwarm; peer: Promise<ChannelPeer> } {
  let found!: (peer: ChannelPeer) => void;
  const peer = new Promise<ChannelPeer>((resolve) => (found = resolve));
  const swarm = new RtcSwarm(env, { hub: String(hub.info.url), image: 'hello@1', codecs: nodeCodecs, ...options, onPeer: (p) => found(p) });
  swarms.push(swarm);
  return { swarm, peer };
}

test('a Node peer fetches every chunk of an image from another over a WebRTC data channel, verified; a lying channel peer is dropped', async () => {
  const env = await nodeRtcEnvironment();
  // The sharer splits its answers into 16 KiB messages.
  const sharer = waitForPeer({ serve: new ShareCatalog(cache, [{ repo: 'http://origin', name: 'hello', version: '1' }]), maxMessage: 16 * 1024 }, env);
  await sharer.swarm.start();
  const client = waitForPeer({}, env);
  await client.swarm.start();
  const [served, fetcher] = await Promise.all([sharer.peer, client.peer]);

  const diskRef = image.manifest.disks[0]!;
  const index = decodeIndex((await fetcher.get({ id: diskRef.index, length: indexByteLength(diskRef.size, diskRef.chunkSize) })).data);
  let bytes = 0;
  for (const [i, id] of index.ids.entries()) {
    if (isHole(id)) continue;
    const object = await fetcher.get({ id, length: chunkLength(index, i) });
    assert.equal(object.data.length, chunkLength(index, i));
    bytes += object.data.length;
  }
  assert.ok(bytes >= 1024 * 1024, `fetched ${bytes} bytes`);
  assert.ok(served.stats.framesSent > served.stats.served * 4, `${served.stats.framesSent} messages for ${served.stats.served} objects: answers were split`);
  const envelope = await fetcher.manifest('hello', '1');
  assert.deepEqual(envelope, image.envelope);
  assert.equal(await fetcher.get({ id: 'ab'.repeat(32), length: 10 }).then(() => 'found', (e: { code?: string }) => e.code), 'object-missing');

  // A member whose catalog lies: every object is garbage of the right size.
  const liar = waitForPeer({
    serve: {
      object: async (id) => {
        const real = await cache.objects.dir.read(`objects/${id.slice(0, 2)}/${id}`);
        return real ? new Uint8Array(real.length).fill(0x42) : null;
      },
      manifest: async () => null,
    },
  }, env);
  await liar.swarm.start();
  const late = waitForPeer({}, env);
  await late.swarm.start();
  // The newcomer offers to the three members the hub listed: the sharer, the fetch-only client, the liar.
  const channels: ChannelPeer[] = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no channels to the three members')), 60_000);
    const poll = setInterval(() => {
      if (late.swarm.peers.length >= 3) {
        clearInterval(poll);
        clearTimeout(timer);
        channels.push(...late.swarm.peers);
        resolve();
      }
    }, 50);
  });
  const firstChunk = index.ids.findIndex((id) => !isHole(id));
  const ref = { id: index.ids[firstChunk]!, length: chunkLength(index, firstChunk) };
  const outcomes = await Promise.all(channels.map((c) => c.get(ref).then(() => 'ok', (e: { code?: string }) => e.code)));
  assert.deepEqual([...outcomes].sort(), ['object-invalid', 'object-missing', 'ok'], 'the liar is caught by the hash, the honest member verifies, the fetch-only one has nothing');
  const lying = channels[outcomes.indexOf('object-invalid')]!;
  const honest = channels[outcomes.indexOf('ok')]!;
  // In a mirror group, with the liar ranked first: dropped and reported, the read still gets the right bytes.
  const group = new MirrorGroup([new TransportStore(new HttpTransport('http://127.0.0.1:9', { retries: 0, timeoutMs: 2000 }), nodeCodecs)]);
  const dropped: string[] = [];
  group.addPeers([lying], { lan: true, latencyMs: 0, onDropped: (reason, wrong) => void (wrong && dropped.push(reason)) });
  group.addPeers([honest], { lan: true, latencyMs: 1 });
  const next = { id: index.ids[firstChunk + 1]!, length: chunkLength(index, firstChunk + 1) };
  const object = await group.get(next);
  assert.equal(object.source, honest.name);
  assert.equal(dropped.length, 1);
  assert.deepEqual(group.ranking().filter((m) => m.kind === 'peer').map((m) => m.name), [honest.name]);

  // Reported over signaling: the hub no longer introduces the liar to members from the reporter's address.
  const liarId = liar.swarm.selfId!;
  const before = waitForPeer({}, env);
  await before.swarm.start();
  assert.ok(before.swarm.members.includes(liarId));
  late.swarm.report(lying, 'served wrong bytes (test)');
  let hidden = false;
  for (let i = 0; i < 50 && !hidden; i++) {
    const joiner = waitForPeer({}, env);
    await joiner.swarm.start();
    hidden = !joiner.swarm.members.includes(liarId) && joiner.swarm.members.length > 0;
    if (!hidden) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(hidden, 'the reported member is not introduced again');
});

test('the run page joins a swarm only on an open hub, for an open image', async () => {
  const page = await (await fetch(`${String(hub.info.url)}/i/hello/run`)).text();
  assert.match(page, /data-swarm="hello@1"/);
  const invite = await startCli(['serve', repoDir, '--port', '0', '--hub', '--hosting', 'invite', '--hub-state', join(work, 'invite.db'), '--json', '--quiet']);
  try {
    assert.doesNotMatch(await (await fetch(`${String(invite.info.url)}/i/hello/run`)).text(), /data-swarm/);
  } finally {
    await invite.kill('SIGTERM');
  }
  const plain = await startRepoServer({ repoDir });
  try {
    assert.doesNotMatch(await (await fetch(`${plain.url}/i/hello/run`)).text(), /data-swarm/, 'no hub, no swarm');
  } finally {
    await plain.close();
  }
});

test('hostme share --webrtc (its own process) serves a Node peer over a data channel; the hub refuses bad signaling', async () => {
  const sharer = await startCli(['share', 'http://origin', 'hello@1', '--hub', String(hub.info.url), '--cache', cache.root, '--host', '127.0.0.1', '--webrtc', '--json']);
  try {
    assert.equal(sharer.info.webrtc, true);
    const env = await nodeRtcEnvironment();
    // The newcomer connects to every member still in the swarm (this file's earlier ones too): one of them, the process, serves the index.
    const client = waitForPeer({}, env);
    await client.swarm.start();
    await client.peer;
    const diskRef = image.manifest.disks[0]!;
    const ref = { id: diskRef.index, length: indexByteLength(diskRef.size, diskRef.chunkSize) };
    let got: string | undefined;
    for (let attempt = 0; attempt < 100 && !got; attempt++) {
      for (const peer of client.swarm.peers) {
        const outcome = await peer.get(ref).then(() => 'ok', (e: { code?: string }) => e.code ?? 'error');
        if (outcome === 'ok') got = peer.name;
      }
      if (!got) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(got, 'no member served the index over WebRTC');
    // Signaling input checks: unknown image, malformed image.
    const { WebSocket } = await import('ws');
    const status = (url: string) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(url);
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.on('open', () => {
          ws.close();
          resolve(101);
        });
        ws.on('error', () => resolve(0));
      });
    const base = String(hub.info.url).replace(/^http/, 'ws').replace(/\/$/, '');
    assert.equal(await status(`${base}/api/peers/signal?image=nothere@1`), 404);
    assert.equal(await status(`${base}/api/peers/signal?image=../../x`), 400);
  } finally {
    await sharer.kill('SIGTERM');
  }
});

test('signaling: invite-only hubs have no public swarm', async () => {
  const { createServer } = await import('node:http');
  const { SignalServer } = await import('./signal-server.js');
  const signals = new SignalServer({ imageExists: async () => true, publicSwarm: false });
  const server = createServer((_req, res) => void res.writeHead(404).end());
  server.on('upgrade', (req, socket, head) => {
    if (!signals.handleUpgrade(req, socket, head)) socket.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const { WebSocket } = await import('ws');
    const port = (server.address() as { port: number }).port;
    const status = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/api/peers/signal?image=hello@1`);
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => resolve(101));
      ws.on('error', () => resolve(0));
    });
    assert.equal(status, 403);
  } finally {
    signals.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});
