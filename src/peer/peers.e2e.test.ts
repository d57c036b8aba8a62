import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startRepoServer, type RunningRepoServer } from '../server/server.js';
import { publishedReferenceGuest, runCli, copyRepo, type PublishedGuest } from '../testing/published-guest.js';
import { startCli, type CliProcess } from '../testing/cli-process.js';
import { tempDir, removeDir } from '../testing/fixtures.js';
import { startWanProxy, type WanProxy } from '../bench/wan-proxy.js';
import type { RunStats } from '../runner/run-stats.js';

// Three nodes on loopback, each its own process and cache: A and B booted the
// reference guest from the origin and share it; C boots it from them. The
// origin sits behind a counting proxy (no delay) so its bytes can be counted.
const env = { HOSTME_ACCEL: process.env.HOSTME_ACCEL ?? 'tcg', HOSTME_PEER_INTERVAL: '1' };
let published: PublishedGuest;
let repoDir: string;
let work: string;
let origin: RunningRepoServer;
let proxy: WanProxy;
let hub: CliProcess;
let hubUrl: string;
const sharers: CliProcess[] = [];
const extraServers: Server[] = [];

const originUrl = () => `http://127.0.0.1:${proxy.port}`;

before(async () => {
  published = await publishedReferenceGuest();
  work = await tempDir('hostme-peers-e2e-');
  repoDir = await copyRepo(published.repoDir, join(work, 'repo'));
  origin = await startRepoServer({ repoDir, port: 0 });
  proxy = await startWanProxy({ targetPort: Number(new URL(origin.url).port), rttMs: 0, downMbit: 0 });
  hub = await startCli(['serve', repoDir, '--port', '0', '--hub', '--hub-state', join(work, 'hub.db'), '--json', '--quiet'], { env });
  hubUrl = String(hub.info.url).replace(/\/$/, '');
});

after(async () => {
  for (const s of sharers) await s.kill('SIGKILL').catch(() => {});
  await hub?.kill('SIGKILL').catch(() => {});
  for (const s of extraServers) s.closeAllConnections();
  await Promise.all(extraServers.map((s) => new Promise((r) => s.close(r))));
  proxy?.close();
  await origin?.close().catch(() => {});
  await removeDir(work);
});

async function boot(name: string, extra: string[] = []): Promise<{ stats: RunStats; stderr: string; originBytes: number }> {
  const statsFile = join(work, `${name}.json`);
  proxy.counters.bytesDown = 0;
  const out = await runCli(['run', originUrl(), 'hello@1', '--cache', join(work, `cache-${name}`), '--until', 'HOSTME-READY', '--timeout', '240', '--console', 'none', '--stats-json', statsFile, ...extra], { env, timeoutMs: 300_000 });
  const originBytes = proxy.counters.bytesDown;
  assert.equal(out.code, 0, `${name}: ${out.stderr}`);
  return { stats: JSON.parse(await readFile(statsFile, 'utf8')) as RunStats, stderr: out.stderr, originBytes };
}

async function share(name: string): Promise<CliProcess> {
  const sharer = await startCli(['share', originUrl(), 'hello@1', '--hub', hubUrl, '--cache', join(work, `cache-${name}`), '--host', '127.0.0.1', '--json'], { env });
  sharers.push(sharer);
  return sharer;
}

async function trackerPeers(): Promise<number[]> {
  const answer = (await (await fetch(`${hubUrl}/api/peers?image=hello@1`)).json()) as { peers: Array<{ port: number }> };
  return answer.peers.map((p) => p.port).sort();
}

let sharerA: CliProcess;
let sharerB: CliProcess;

test('A and B boot from the origin; C then gets at least 90% of its chunk bytes from them and reaches HOSTME-READY', async (t) => {
  const a = await boot('a');
  const b = await boot('b', ['--hub', hubUrl]);
  assert.ok(a.originBytes > 1_000_000 && b.originBytes > 1_000_000, 'A and B fetched from the origin');
  assert.match(b.stderr, /peers: none found/);
  sharerA = await share('a');
  sharerB = await share('b');
  assert.deepEqual(await trackerPeers(), [Number(sharerA.info.port), Number(sharerB.info.port)].sort());

  const c = await boot('c1', ['--hub', hubUrl]);
  assert.match(c.stderr, /peers: 2 found/);
  assert.ok(c.stats.bytesFromPeers > 1_000_000, `C fetched ${c.stats.bytesFromPeers} bytes from peers`);
  // Everything the origin sent during C's boot (manifest and listing included) against all of C's chunk bytes.
  const chunkBytes = c.stats.bytesFromPeers + c.originBytes;
  t.diagnostic(`A: ${a.originBytes} origin bytes; C: ${c.originBytes} origin bytes, ${c.stats.bytesFromPeers} from peers, ready in ${c.stats.msToReady} ms (A ${a.stats.msToReady} ms)`);
  assert.ok(c.originBytes <= 0.1 * chunkBytes, `origin sent ${c.originBytes} bytes, peers ${c.stats.bytesFromPeers}`);
  assert.ok(c.stats.mirrorsUsed.some((m) => m.startsWith('peer ')), `sources used: ${c.stats.mirrorsUsed.join(', ')}`);
});

test('a lying peer is named, dropped and reported; a peer killed mid-boot; C still boots from the origin', async () => {
  assert.ok(sharerA && sharerB, 'needs the first test');
  // A leaves cleanly (SIGTERM: it tells the tracker); B stays until killed below.
  await sharerA.kill('SIGTERM');
  // The liar: answers every object with garbage of the right length, announced like any peer.
  let lies = 0;
  const liar = createServer((req, res) => {
    lies++;
    res.writeHead(200).end(Buffer.alloc(64 * 1024, 0x5a));
  });
  extraServers.push(liar);
  await new Promise<void>((r) => liar.listen(0, '127.0.0.1', r));
  const liarPort = (liar.address() as AddressInfo).port;
  const announce = async () => fetch(`${hubUrl}/api/peers/announce`, { method: 'POST', body: JSON.stringify({ port: liarPort, images: ['hello@1'] }) });
  assert.equal((await announce()).status, 200);
  const heartbeat = setInterval(() => void announce().catch(() => {}), 1000);
  try {
    assert.deepEqual(await trackerPeers(), [Number(sharerB.info.port), liarPort].sort());
    const killer = setTimeout(() => void sharerB.kill('SIGKILL'), 1500);
    const c = await boot('c2', ['--hub', hubUrl]).finally(() => clearTimeout(killer));
    assert.ok(lies > 0, 'the liar was asked');
    assert.match(c.stderr, new RegExp(`peer http://127\\.0\\.0\\.1:${liarPort}: served wrong bytes .*dropped and reported to the hub`));
    assert.equal((c.stderr.match(new RegExp(`127\\.0\\.0\\.1:${liarPort}: served wrong bytes`, 'g')) ?? []).length, 1, 'named once');
    // The hub no longer hands the liar to the machine that reported it.
    assert.ok(!(await trackerPeers()).includes(liarPort), 'the reported liar is still listed');
  } finally {
    clearInterval(heartbeat);
  }
});

test('origin down, peers up: C boots with the signed manifest and every chunk from a peer', async () => {
  await share('a');
  proxy.close();
  await origin.close();
  const down = await fetch(originUrl()).then(() => 'up', () => 'down');
  assert.equal(down, 'down');
  const c = await boot('c3', ['--hub', hubUrl, '--pubkey', `${published.keyFile}.pub`]);
  assert.match(c.stderr, /manifest of hello@1 came from a peer/);
  assert.ok(c.stats.bytesFromPeers > 1_000_000, `from peers: ${c.stats.bytesFromPeers}`);
});
