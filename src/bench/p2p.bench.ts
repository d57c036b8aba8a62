/**
 * npm run bench:p2p — N = 1, 2, 4, 8 nodes (separate processes, separate
 * caches) start the same image at the same moment behind one emulated
 * 50 Mbit/s, 100 ms origin link (wan-proxy.ts); LAN links between nodes are
 * loopback, unthrottled. Measured per N, with peers off (baseline: every node
 * from the origin) and on (the hub's tracker, peers share as they fetch):
 * bytes the origin link carried and each node's time to have its boot set.
 *
 * Eight TCG guests at once would measure QEMU on 2 shared cores, not
 * distribution: each node fetches the boot set (the objects one real boot of
 * the reference guest read, recorded here once with QEMU) through the
 * runner's own resolve → cache → mirror group path, without QEMU (p2p-node.ts).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startRepoServer } from '../server/server.js';
import { publishedReferenceGuest, copyRepo } from '../testing/published-guest.js';
import { startCli } from '../testing/cli-process.js';
import { startImage } from '../runner/run-image.js';
import { CacheDir } from '../runner/cache-dir.js';
import { startWanProxy } from './wan-proxy.js';
import { Cleanup, fmtRatio, log, machineInfo, repoRoot, table, writeJson, median } from './bench-util.js';

const COUNTS = (process.env.HOSTME_BENCH_P2P_N ?? '1,2,4,8').split(',').map(Number);
const nodeScript = fileURLToPath(new URL('./p2p-node.js', import.meta.url));

interface NodeResult {
  ms: number;
  chunks: number;
  fromPeers: number;
  fromOrigin: number;
}

interface Round {
  n: number;
  peers: boolean;
  originBytes: number;
  /** HTTP requests through the origin link (manifest, indexes, objects). */
  originRequests: number;
  /** 1-minute load average when the round started. */
  loadavg: number;
  msMedian: number;
  msMax: number;
  nodes: NodeResult[];
}

const cleanup = new Cleanup();
try {
  const published = await publishedReferenceGuest();
  const work = await mkdtemp(path.join(tmpdir(), 'hostme-bench-p2p-'));
  cleanup.add('work dir', () => rm(work, { recursive: true, force: true }));
  const repoDir = await copyRepo(published.repoDir, path.join(work, 'repo'));
  const origin = await startRepoServer({ repoDir, port: 0 });
  cleanup.add('origin', () => origin.close());
  const wan = await startWanProxy({ targetPort: Number(new URL(origin.url).port), rttMs: 100, downMbit: 50 });
  cleanup.add('wan proxy', () => wan.close());
  const repo = `http://127.0.0.1:${wan.port}`;
  const env = { HOSTME_PEER_INTERVAL: '1' };
  const hub = await startCli(['serve', repoDir, '--port', '0', '--hub', '--hub-state', path.join(work, 'hub.db'), '--json', '--quiet'], { env });
  cleanup.add('hub', () => hub.kill('SIGKILL'));
  const hubUrl = String(hub.info.url).replace(/\/$/, '');

  // The boot set: every object one real boot (QEMU, TCG) put in an empty cache.
  log('recording the boot set with one QEMU boot');
  const recordCache = path.join(work, 'record');
  const recorded = await startImage({ link: { repo: origin.url, name: 'hello', version: '1' }, cacheDir: recordCache, console: 'none', until: /HOSTME-READY/, timeoutMs: 240_000, accel: process.env.HOSTME_ACCEL === 'kvm' ? 'kvm' : 'tcg' });
  await recorded.finished;
  const ids: string[] = [];
  for await (const info of new CacheDir(recordCache).objects.list()) ids.push(info.id);
  const bootSetFile = path.join(work, 'boot-set.txt');
  await writeFile(bootSetFile, ids.join('\n') + '\n');
  log(`boot set: ${ids.length} objects`);

  // One unmeasured round first: the first round after the QEMU recording paid for a cold origin (page cache,
  // JIT, the recording's QEMU still exiting): N = 1 peers off took 13.5 s there against 3.8 s for the same work
  // with peers on right after. Then off and on side by side for each N, so load drift hits both alike.
  log('warm-up round (not measured)');
  await round(1, false, 'warmup');
  const rounds: Round[] = [];
  for (const n of COUNTS) {
    for (const peers of [false, true]) {
      rounds.push(await round(n, peers));
      const r = rounds.at(-1)!;
      log(`N=${n} peers ${peers ? 'on ' : 'off'}: origin ${(r.originBytes / 1e6).toFixed(1)} MB in ${r.originRequests} requests, time to boot set median ${(r.msMedian / 1000).toFixed(2)} s, max ${(r.msMax / 1000).toFixed(2)} s (load ${r.loadavg.toFixed(1)})`);
    }
  }

  async function round(n: number, peers: boolean, tag = ''): Promise<Round> {
    const children: ChildProcessWithoutNullStreams[] = [];
    const outputs: Array<Promise<NodeResult>> = [];
    const waiting: Array<Promise<void>> = [];
    for (let i = 0; i < n; i++) {
      // Every round starts cold: its own cache directories.
      const cache = path.join(work, `${tag}n${n}-${peers ? 'on' : 'off'}-${i}`);
      const args = { repo, name: 'hello', version: '1', cache, bootSet: bootSetFile, ...(peers ? { hub: hubUrl } : {}) };
      const child = spawn(process.execPath, [nodeScript, JSON.stringify(args)], { stdio: ['pipe', 'pipe', 'pipe'] });
      children.push(child);
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
      let out = '';
      let readyToGo!: () => void;
      waiting.push(new Promise((resolve) => (readyToGo = resolve)));
      outputs.push(
        new Promise((resolve, reject) => {
          child.stdout.on('data', (d: Buffer) => {
            out += d.toString();
            for (const line of out.split('\n').slice(0, -1)) {
              const msg = JSON.parse(line) as { state: string } & NodeResult;
              if (msg.state === 'waiting') readyToGo();
              if (msg.state === 'done') resolve(msg);
            }
            out = out.slice(out.lastIndexOf('\n') + 1);
          });
          child.on('exit', (code) => reject(new Error(`node ${i} exited ${code}: ${stderr}`)));
        }),
      );
    }
    await Promise.all(waiting);
    const loadavg = os.loadavg()[0]!;
    wan.reset();
    for (const child of children) child.stdin.write('go\n');
    const nodes = await Promise.all(outputs);
    if (nodes.some((x) => x.fromOrigin + x.fromPeers === 0)) throw new Error(`N=${n}: a node fetched nothing (its cache was not cold)`);
    if (process.env.HOSTME_BENCH_VERBOSE) for (const node of nodes) log(JSON.stringify(node));
    const originBytes = wan.counters.bytesDown;
    const originRequests = wan.counters.requests;
    for (const child of children) child.stdin.end('stop\n');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
    const times = nodes.map((x) => x.ms);
    return { n, peers, originBytes, originRequests, loadavg, msMedian: median(times), msMax: Math.max(...times), nodes };
  }

  const one = rounds.find((r) => r.n === 1 && !r.peers)!;
  const rows = [['N', 'peers', 'origin MB', '× one boot', 'median s', 'max s', '× N=1']];
  for (const r of rounds) {
    const base = rounds.find((x) => x.n === 1 && x.peers === r.peers)!;
    rows.push([String(r.n), r.peers ? 'on' : 'off', (r.originBytes / 1e6).toFixed(1), fmtRatio(r.originBytes / one.originBytes), (r.msMedian / 1000).toFixed(2), (r.msMax / 1000).toFixed(2), fmtRatio(r.msMax / base.msMax)]);
  }
  process.stdout.write(table(rows) + '\n');
  const at8 = (peers: boolean) => rounds.find((r) => r.n === Math.max(...COUNTS) && r.peers === peers);
  const on8 = at8(true);
  const off8 = at8(false);
  if (on8 && off8) {
    process.stdout.write(`N=${on8.n}: origin bytes peers on vs off ${fmtRatio(on8.originBytes / off8.originBytes)}; vs one boot ${fmtRatio(on8.originBytes / one.originBytes)} (goal ≤ 1.5×); slowest node vs N=1 ${fmtRatio(on8.msMax / one.msMax)} (goal ≤ 1.3×)\n`);
  }
  await writeJson(path.join(repoRoot, 'bench', 'results', 'p2p.json'), {
    benchmark: 'p2p',
    date: new Date().toISOString(),
    machine: machineInfo(),
    link: { rttMs: 100, downMbit: 50 },
    method: 'boot set fetched through the runner (resolve, cache, mirror group with peers, Swarm.coordinate) without QEMU; the boot set recorded from one real TCG boot; one unmeasured warm-up round, then peers off and on side by side per N',
    bootSetObjects: ids.length,
    rounds,
  });
} finally {
  await cleanup.run();
}
