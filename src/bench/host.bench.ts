/**
 * npm run bench:host — the HostMe gateway against the same VM reached
 * directly on its published port: requests/s, p50 and p99 of a small page and
 * a 1 MiB file, with one and with two nodes; then the failover time after
 * `kill -9` of one node (until the first success through the other) and the
 * requests that failed. Real processes: one hub, two nodes, two QEMU VMs
 * (examples/web plus a 1 MiB file, built once into .cache/bench-host).
 */
import { Agent, request } from 'node:http';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { buildImage } from '../build/index.js';
import { createKeyFiles, loadPrivateKey } from '../pack/publisher-key.js';
import { killLeftoverVms, startCli, type CliProcess } from '../testing/cli-process.js';
import { Cleanup, runBench, fmtRatio, log, machineInfo, repoRoot, table, writeJson } from './bench-util.js';

const DURATION_MS = Number(process.env.HOSTME_BENCH_SECONDS ?? 4) * 1000;
const CONCURRENCY = 8;

interface Measured {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  errors: number;
}

/** A web image with /www/big.bin (1 MiB) besides the small index page. */
async function benchImage(): Promise<string> {
  const base = path.join(repoRoot, '.cache', 'bench-host');
  const web = path.join(repoRoot, 'examples', 'web');
  const manifest = JSON.parse(await readFile(path.join(web, 'hostme.json'), 'utf8')) as { name: string; files: Array<{ src: string; dest: string }> };
  const stamp = createHash('sha256').update(JSON.stringify(manifest)).update(await readFile(path.join(web, 'rootfs', 'etc', 'hostme', 'rc.d', '50-httpd'))).digest('hex');
  const repoDir = path.join(base, 'repo');
  if ((await readFile(path.join(base, 'done'), 'utf8').catch(() => '')) === stamp) return repoDir;
  await rm(base, { recursive: true, force: true });
  const src = path.join(base, 'src');
  await mkdir(path.join(src, 'www'), { recursive: true });
  // Incompressible, so the 1 MiB really crosses every hop.
  const big = Buffer.alloc(1 << 20);
  for (let i = 0; i < big.length; i += 32) createHash('sha256').update(String(i)).digest().copy(big, i);
  await writeFile(path.join(src, 'www', 'big.bin'), big);
  manifest.name = 'web';
  manifest.files = [...manifest.files.map((f) => ({ ...f, src: path.resolve(web, f.src) })), { src: path.join(src, 'www'), dest: '/www' }];
  const manifestPath = path.join(src, 'hostme.json');
  await writeFile(manifestPath, JSON.stringify(manifest));
  await createKeyFiles(path.join(base, 'publisher.key'));
  await buildImage({ manifestPath, repoDir, key: await loadPrivateKey(path.join(base, 'publisher.key')), cacheDir: path.join(repoRoot, '.cache', 'build'), workDir: base, inputs: { title: 'bench' } });
  await writeFile(path.join(base, 'done'), stamp);
  return repoDir;
}

/** Closed-loop load: CONCURRENCY keep-alive clients for DURATION_MS. */
async function load(url: string, expectBytes?: number): Promise<Measured> {
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const latencies: number[] = [];
  let errors = 0;
  const end = performance.now() + DURATION_MS;
  const one = () =>
    new Promise<void>((resolve) => {
      const t0 = performance.now();
      const req = request(url, { agent }, (res) => {
        let bytes = 0;
        res.on('data', (d: Buffer) => (bytes += d.length));
        res.on('end', () => {
          if (res.statusCode === 200 && (expectBytes === undefined || bytes === expectBytes)) latencies.push(performance.now() - t0);
          else errors++;
          resolve();
        });
        res.on('error', () => {
          errors++;
          resolve();
        });
      });
      req.on('error', () => {
        errors++;
        resolve();
      });
      req.end();
    });
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < end) await one();
    }),
  );
  const elapsed = performance.now() - started;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((latencies.length * p) / 100))] ?? NaN;
  return { rps: latencies.length / (elapsed / 1000), p50Ms: pct(50), p99Ms: pct(99), requests: latencies.length, errors };
}

async function main(): Promise<void> {
  const cleanup = new Cleanup();
  const work = path.join(repoRoot, '.cache', 'bench-host-run');
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  const env = { HOSTME_ACCEL: process.env.HOSTME_ACCEL ?? '' };
  try {
    log('bench:host: building the bench image (once)');
    const repoDir = await benchImage();
    const hub = await startCli(['serve', repoDir, '--port', '0', '--hub', '--quiet', '--hub-state', path.join(work, 'hub.db'), '--json'], { env });
    cleanup.add('hub', () => hub.kill('SIGTERM'));
    const hubUrl = String(hub.info.url);
    const startNode = async (name: string): Promise<CliProcess> => {
      const node = await startCli(['host', '--home', path.join(work, name), '--port', '0', '--json'], { env });
      cleanup.add(name, () => node.kill('SIGTERM'));
      const added = await startCli(['host', 'add', `${hubUrl}/i/web`, '--home', path.join(work, name), '--json'], { env }).catch((err: Error) => err);
      if (added instanceof Error) throw added;
      return node;
    };
    // The gateway's own cost: the same hub, a stand-in node whose "VM" is a plain Node HTTP server.
    log('bench:host: gateway against a stand-in node (no VM)');
    const standIn = await startCli([hubUrl], { env, script: path.join(repoRoot, 'dist', 'bench', 'host-stand-in.js') });
    cleanup.add('stand-in node', () => standIn.kill('SIGTERM'));
    const results: Record<string, Measured> = {};
    {
      const deadline = Date.now() + 60_000;
      while ((await fetch(`${hubUrl}/s/web/`)).status !== 200) {
        if (Date.now() > deadline) throw new Error('the stand-in node did not become ready');
        await new Promise((r) => setTimeout(r, 200));
      }
      for (const [label, p, size] of [['small', '/', undefined], ['1MiB', '/big.bin', 1 << 20]] as const) {
        results[`standin-direct-${label}`] = await load(`${String(standIn.info.direct)}${p}`, size);
        results[`standin-gateway-${label}`] = await load(`${hubUrl}/s/web${p}`, size);
      }
      await standIn.kill('SIGTERM');
      while (((await (await fetch(`${hubUrl}/api/hub/nodes`)).json()) as { nodes: unknown[] }).nodes.length > 0) await new Promise((r) => setTimeout(r, 100));
    }
    const readyCount = async () => ((await (await fetch(`${hubUrl}/api/hub/nodes`)).json()) as { nodes: Array<{ ready: string[] }> }).nodes.filter((n) => n.ready.includes('web')).length;
    const waitReady = async (count: number) => {
      const deadline = Date.now() + 300_000;
      while ((await readyCount()) < count) {
        if (Date.now() > deadline) throw new Error('nodes did not become ready');
        await new Promise((r) => setTimeout(r, 300));
      }
    };
    log('bench:host: node A boots the site');
    const a = await startNode('node-a');
    await waitReady(1);
    const sites = (await (await fetch(`${String(a.info.url)}/api/sites`)).json()) as { sites: Array<{ address?: string }> };
    const direct = sites.sites[0]!.address!;
    for (const [label, p, size] of [['small', '/', undefined], ['1MiB', '/big.bin', 1 << 20]] as const) {
      results[`direct-${label}`] = await load(`${direct}${p}`, size);
      results[`gateway-1node-${label}`] = await load(`${hubUrl}/s/web${p}`, size);
    }
    log('bench:host: node B joins');
    const b = await startNode('node-b');
    await waitReady(2);
    for (const [label, p, size] of [['small', '/', undefined], ['1MiB', '/big.bin', 1 << 20]] as const) results[`gateway-2nodes-${label}`] = await load(`${hubUrl}/s/web${p}`, size);

    // Failover: GETs in a loop, kill -9 A, time until the first success served by B after the kill.
    log('bench:host: kill -9 node A under load');
    let failed = 0;
    let killedAt = 0;
    let firstAfter = 0;
    let stop = false;
    const bId = String(b.info.node);
    const clients = Array.from({ length: 4 }, async () => {
      while (!stop) {
        const r = await fetch(`${hubUrl}/s/web/`).catch(() => undefined);
        if (!r || r.status !== 200) failed++;
        else if (killedAt && !firstAfter && r.headers.get('x-hostme-node') === bId) firstAfter = performance.now();
        await r?.arrayBuffer().catch(() => {});
      }
    });
    await new Promise((r) => setTimeout(r, 1000));
    killedAt = performance.now();
    a.child.kill('SIGKILL');
    cleanup.add('node A\'s QEMU', () => killLeftoverVms(path.join(work, 'node-a')));
    await new Promise((r) => setTimeout(r, 3000));
    stop = true;
    await Promise.all(clients);
    const failover = { msToFirstSuccessThroughB: firstAfter ? firstAfter - killedAt : null, failedRequests: failed };

    const ratio = (l: string) => results[`gateway-1node-${l}`]!.rps / results[`direct-${l}`]!.rps;
    const standInRatio = (l: string) => results[`standin-gateway-${l}`]!.rps / results[`standin-direct-${l}`]!.rps;
    const rows = [['case', 'req/s', 'p50 ms', 'p99 ms', 'errors'], ...Object.entries(results).map(([k, m]) => [k, m.rps.toFixed(0), m.p50Ms.toFixed(2), m.p99Ms.toFixed(2), String(m.errors)])];
    process.stdout.write(`${table(rows)}\n`);
    process.stdout.write(`gateway/direct throughput, one node: small ${fmtRatio(ratio('small'))}, 1 MiB ${fmtRatio(ratio('1MiB'))} (goal ≥ 0.8×)\n`);
    process.stdout.write(`gateway/direct throughput, stand-in node (no VM; the gateway's own cost): small ${fmtRatio(standInRatio('small'))}, 1 MiB ${fmtRatio(standInRatio('1MiB'))}\n`);
    process.stdout.write(`failover after kill -9: first success through B ${failover.msToFirstSuccessThroughB?.toFixed(0) ?? 'never'} ms after the kill, ${failover.failedRequests} failed requests (goal ≤ 2 s)\n`);
    await writeJson(path.join(repoRoot, 'bench', 'results', 'host.json'), {
      machine: machineInfo(),
      accel: process.env.HOSTME_ACCEL ?? 'auto',
      concurrency: CONCURRENCY,
      durationMs: DURATION_MS,
      results,
      ratios: { small: ratio('small'), oneMiB: ratio('1MiB'), standInSmall: standInRatio('small'), standInOneMiB: standInRatio('1MiB') },
      failover,
    });
  } finally {
    await cleanup.run();
  }
}

runBench('host', main);
