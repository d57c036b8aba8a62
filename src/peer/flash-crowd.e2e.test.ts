import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startRepoServer, type RunningRepoServer } from '../server/server.js';
import { startCli, type CliProcess } from '../testing/cli-process.js';
import { makeDiskBytes, packWithNewKey, removeDir, tempDir, writeDisk } from '../testing/fixtures.js';
import { manifestBlobs } from '../format/manifest.js';

// A flash crowd (docs/peers.md "Flash crowd"): four nodes, each its own
// process and cache, start fetching one image at the same moment with the
// hub's tracker. The origin sits behind a proxy that counts GETs per object:
// with the swarm plan each object comes from the origin about once, not once
// per node. Nodes run the bench's node (src/bench/p2p-node.ts): the runner's
// resolve → cache → mirror group path with Swarm.coordinate, without QEMU.
const NODES = 4;
const nodeScript = fileURLToPath(new URL('../bench/p2p-node.js', import.meta.url));
const env = { HOSTME_PEER_INTERVAL: '1' };

let work: string;
let origin: RunningRepoServer;
let counter: Server;
let hub: CliProcess;
/** The chunk indexes: metadata every node reads on demand at the same instant, before its chunks. */
const indexIds = new Set<string>();
const gets = new Map<string, number>();
const children: ChildProcessWithoutNullStreams[] = [];

before(async () => {
  work = await tempDir('hostme-flash-crowd-');
  const repoDir = join(work, 'repo');
  // 16 MiB at 64 KiB chunks: about 170 stored chunks (a third of the disk is holes).
  const { repo } = await packWithNewKey(work, repoDir, { disk: await writeDisk(join(work, 'disk.raw'), makeDiskBytes(16, 7)), name: 'crowd', version: '1', chunkSize: 65536 });
  for (const { ref } of manifestBlobs((await repo.loadImage('crowd', '1')).manifest)) indexIds.add(ref.index);
  origin = await startRepoServer({ repoDir, port: 0 });
  const target = new URL(origin.url);
  counter = createServer((req, res) => {
    const id = /^\/objects\/[0-9a-f]{2}\/([0-9a-f]{64})$/.exec(req.url ?? '')?.[1];
    if (id && req.method === 'GET') gets.set(id, (gets.get(id) ?? 0) + 1);
    const upstream = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => counter.listen(0, '127.0.0.1', resolve));
  hub = await startCli(['serve', repoDir, '--port', '0', '--hub', '--hub-state', join(work, 'hub.db'), '--json', '--quiet'], { env });
});

after(async () => {
  for (const child of children) child.kill('SIGKILL');
  await hub?.kill('SIGKILL').catch(() => {});
  counter?.closeAllConnections();
  await new Promise((resolve) => counter?.close(resolve));
  await origin?.close().catch(() => {});
  await removeDir(work);
});

interface NodeDone {
  chunks: number;
  fromPeers: number;
  fromOrigin: number;
  served: number;
}

/** Starts one node process; resolves `ready` once it shares and waits for "go", `done` with its counts. */
function startNode(i: number, bootSet: string, repo: string, hubUrl: string): { child: ChildProcessWithoutNullStreams; ready: Promise<void>; done: Promise<NodeDone> } {
  const args = { repo, name: 'crowd', version: '1', cache: join(work, `node-${i}`), bootSet, hub: hubUrl };
  const child = spawn(process.execPath, [nodeScript, JSON.stringify(args)], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  let readyNow!: () => void;
  const ready = new Promise<void>((resolve) => (readyNow = resolve));
  const done = new Promise<NodeDone>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const lines = out.split('\n');
      out = lines.pop()!;
      for (const line of lines) {
        const msg = JSON.parse(line) as { state: string } & NodeDone;
        if (msg.state === 'waiting') readyNow();
        if (msg.state === 'done') resolve(msg);
      }
    });
    child.on('exit', (code) => reject(new Error(`node ${i} exited ${code}: ${stderr}`)));
  });
  return { child, ready, done };
}

test(`${NODES} nodes starting together fetch each object from the origin about once`, async (t) => {
  // The boot set: every object of the repository (the nodes keep the chunks their indexes list).
  const ids: string[] = [];
  for (const dir of await readdir(join(work, 'repo', 'objects'))) ids.push(...(await readdir(join(work, 'repo', 'objects', dir))).filter((f) => /^[0-9a-f]{64}$/.test(f)));
  const bootSet = join(work, 'boot-set.txt');
  await writeFile(bootSet, ids.join('\n') + '\n');
  const repo = `http://127.0.0.1:${(counter.address() as AddressInfo).port}`;
  const hubUrl = String(hub.info.url).replace(/\/$/, '');

  const nodes = Array.from({ length: NODES }, (_, i) => startNode(i, bootSet, repo, hubUrl));
  await Promise.all(nodes.map((n) => n.ready));
  gets.clear();
  for (const node of nodes) node.child.stdin.write('go\n');
  const results = await Promise.all(nodes.map((n) => n.done));
  for (const node of nodes) node.child.stdin.end('stop\n');

  const chunks = results[0]!.chunks;
  assert.ok(chunks > 100, `the image has ${chunks} chunks`);
  for (const [i, r] of results.entries()) {
    assert.equal(r.chunks, chunks, `node ${i} read every chunk`);
    // Each node owns a share: it fetched some from the origin, got others from peers, and served its share.
    assert.ok(r.fromPeers > 0, `node ${i} got nothing from peers: ${JSON.stringify(r)}`);
    assert.ok(r.served > 0, `node ${i} served nothing: ${JSON.stringify(r)}`);
  }
  const chunkCounts = [...gets].filter(([id]) => !indexIds.has(id)).map(([, n]) => n);
  const chunkGets = chunkCounts.reduce((a, b) => a + b, 0);
  t.diagnostic(`more than once: ${[...gets].filter(([, n]) => n > 1).slice(0, 20).map(([id, n]) => `${id.slice(0, 12)}${indexIds.has(id) ? ' (index)' : ''}×${n}`).join(', ')}`);
  t.diagnostic(`${chunkCounts.length} distinct chunks, ${chunkGets} origin GETs (${(chunkGets / chunkCounts.length).toFixed(2)} per chunk); without the plan up to ${NODES} per chunk`);
  // Every chunk the nodes hold came through the origin at least once, and about once in all.
  assert.equal(chunkCounts.length, chunks, 'every chunk came from the origin (once, to one of the nodes)');
  assert.ok(chunkGets <= Math.ceil(chunks * 1.1), `${chunkGets} origin GETs for ${chunks} chunks`);
  assert.ok(Math.max(...chunkCounts) <= 2, `a chunk was fetched ${Math.max(...chunkCounts)} times from the origin`);
  // The indexes are read on demand by every node at the same instant: a demand read leaves the owner after its window.
  for (const id of indexIds) assert.ok((gets.get(id) ?? 0) <= NODES, `index ${id} fetched ${gets.get(id)} times`);
});
