/**
 * npm run bench:boot — time to HOSTME-READY and bytes on the wire for the 1 GiB
 * reference disk through an emulated WAN link (src/bench/wan-proxy.ts):
 *  a  local disk + local kernel (no network)
 *  b  download the raw disk + kernel, then boot locally (estimated unless --full)
 *  c  stock QEMU: kernel downloaded first, qcow2 overlay on an http backing file, copy-on-read
 *  d  hostme cold, image without prefetch profile
 *  e  hostme cold, profiled image (prefetch list)
 *  f  hostme warm (cache and instance from e: pinned version, no network)
 *  g  hostme resume of a QEMU snapshot, cold cache; h the same warm
 *  i  g with the snapshot RAM served lazily (HOSTME_LAZY_RAM=1: its recorded working set first); j the same warm
 * Options: --runs N --rtt MS --mbit N --scenarios a,c,e --full --skip-download --timeout S --out FILE
 */
import { createWriteStream } from 'node:fs';
import { link, mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { loadavg } from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { launchVm } from '../vm/qemu.js';
import { chooseAccel } from '../vm/accel.js';
import { loadReferenceGuest } from '../testing/reference-guest.js';
import { openRepository } from '../repo/repository.js';
import { manifestBlobs } from '../format/manifest.js';
import { isHole } from '../format/chunk-index.js';
import { startWanProxy, type WanCounters } from './wan-proxy.js';
import { snapshotReferenceGuest } from '../testing/snapshot-guest.js';
import type { Trace } from './trace-hook.js';
import { Cleanup, runBench, fmtBytes, fmtRatio, fmtSeconds, hostmeBin, log, machineInfo, median, repoRoot, runCommand, startHostmeServe, table, withTimeout, writeJson } from './bench-util.js';

const { values: opts } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    rtt: { type: 'string', default: '100' },
    mbit: { type: 'string', default: '50' },
    scenarios: { type: 'string', default: 'a,b,c,d,e,f,g,h' },
    full: { type: 'boolean', default: false },
    'skip-download': { type: 'boolean', default: false },
    timeout: { type: 'string', default: '180' },
    out: { type: 'string', default: path.join(repoRoot, 'bench', 'results', 'boot.json') },
    'keep-tmp': { type: 'boolean', default: false },
  },
});
const runs = Math.max(1, Number(opts.runs));
const rttMs = Number(opts.rtt);
const mbit = Number(opts.mbit);
const timeoutMs = Number(opts.timeout) * 1000;
const wanted = new Set(opts.scenarios.split(',').map((s) => s.trim()).filter(Boolean));
if (opts['skip-download']) wanted.delete('b');
const READY = /HOSTME-READY/;

interface Run {
  ms: number;
  bytesDown: number;
  bytesUp: number;
  connections: number;
  httpRequests: number;
  estimated?: boolean;
  /** 1-minute load average when the run started (other jobs share the CPU). */
  loadavg1?: number;
  /** Scenario-specific details (phases, hostme stats, byte split). */
  detail?: Record<string, unknown>;
}

interface Scenario {
  id: string;
  title: string;
  runs: Run[];
  median?: { ms: number; bytesDown: number; connections: number; httpRequests: number };
  note?: string;
}

const cleanup = new Cleanup();

async function main(): Promise<void> {
  const guest = loadReferenceGuest();
  const diskSize = (await stat(guest.disk1g)).size;
  const kernelSize = (await stat(guest.kernel)).size;
  const probeStart = performance.now();
  const probe = await chooseAccel();
  const probeMs = performance.now() - probeStart;
  const accel = probe.accel;
  log(`accel ${accel} (${probe.reason}; probe ${probeMs.toFixed(0)} ms); link RTT ${rttMs} ms, ${mbit} Mbit/s down; ${runs} run(s) per scenario`);

  // Temporary files next to the guest (same filesystem: hard links, no copies).
  const tmpParent = path.join(repoRoot, '.cache', 'bench-tmp');
  await mkdir(tmpParent, { recursive: true });
  const tmp = await mkdtemp(path.join(tmpParent, 'boot-'));
  if (!opts['keep-tmp']) cleanup.add('tmp', () => rm(tmp, { recursive: true, force: true }));

  // Warm the page cache for every local input once, equally for all scenarios.
  // (to /dev/null: piping 1 GiB through this process's string buffer took minutes on a loaded machine)
  await runCommand('sh', ['-c', 'cat "$0" "$1" >/dev/null', guest.disk1g, guest.kernel], { timeoutMs: 300_000 }).then(() => undefined);

  const needHostme = ['d', 'e', 'f'].some((s) => wanted.has(s));
  const needPlain = ['b', 'c'].some((s) => wanted.has(s));
  const scenarios: Scenario[] = [];
  const env = { ...process.env, HOSTME_ACCEL: accel };

  // ---- origin servers (outside the measurement)
  let plainPort = 0;
  let plainWarmMs = 0;
  if (needPlain) {
    const plain = path.join(tmp, 'plain');
    await mkdir(plain);
    await link(guest.disk1g, path.join(plain, 'disk-1g.raw'));
    await link(guest.kernel, path.join(plain, 'vmlinux'));
    const served = await startHostmeServe(plain, cleanup);
    plainPort = served.port;
    // hostme serve computes a strong ETag (SHA-256 of the file) on the first request to a
    // non-object file; do it now so the stock scenario does not pay it.
    const t = performance.now();
    for (const f of ['disk-1g.raw', 'vmlinux']) await withTimeout(fetch(`${served.url}/${f}`, { method: 'HEAD' }), 60_000, 'etag warm-up');
    plainWarmMs = performance.now() - t;
    log(`static server for the stock scenarios at ${served.url} (first-request ETag hashing took ${plainWarmMs.toFixed(0)} ms, done before measuring)`);
  }

  let plainRepoPort = 0;
  let profRepoPort = 0;
  const kernelObjects = new Set<string>();
  const diskObjects = new Set<string>();
  const indexObjects = new Set<string>();
  let kernelStored = 0;
  let prepare: Record<string, unknown> = {};
  if (needHostme) {
    const key = path.join(tmp, 'publisher.key');
    await runCommand(process.execPath, [hostmeBin, 'keygen', key], { timeoutMs: 30_000 });
    const repoPlain = path.join(tmp, 'repo-plain');
    const t = performance.now();
    const pack = await runCommand(process.execPath, [hostmeBin, 'pack', guest.disk1g, '--repo', repoPlain, '--name', 'hello', '--kernel', guest.kernel, '--cmdline', guest.cmdline, '--key', key, '--json'], { timeoutMs: 600_000 });
    const packMs = performance.now() - t;
    const repoProf = path.join(tmp, 'repo-prof');
    await runCommand('cp', ['-al', repoPlain, repoProf], { timeoutMs: 60_000 });
    const t2 = performance.now();
    const prof = await runCommand(process.execPath, [hostmeBin, 'profile', 'hello', '--repo', repoProf, '--key', key, '--json'], { timeoutMs: 600_000, env });
    const profileMs = performance.now() - t2;
    prepare = { packMs, pack: JSON.parse(pack.stdout), profileMs, profile: JSON.parse(prof.stdout) };
    log(`packed in ${(packMs / 1000).toFixed(1)} s, profiled in ${(profileMs / 1000).toFixed(1)} s: ${prof.stdout.trim().replace(/\s+/g, ' ')}`);
    // Which object is what (to split the wire bytes by kind).
    for (const repoDir of [repoPlain, repoProf]) {
      const repo = openRepository(repoDir);
      const image = await repo.loadImage('hello', undefined);
      for (const { label, ref } of manifestBlobs(image.manifest)) {
        indexObjects.add(ref.index);
        const index = await repo.readIndex(ref, repo.objects, label);
        const target = label.startsWith('kernel') ? kernelObjects : diskObjects;
        for (const id of index.ids) if (!isHole(id)) target.add(id);
      }
    }
    for (const id of kernelObjects) kernelStored += (await stat(path.join(repoPlain, 'objects', id.slice(0, 2), id))).size;
    log(`kernel blob: ${fmtBytes(kernelSize)} raw, ${fmtBytes(kernelStored)} stored in ${kernelObjects.size} objects`);
    plainRepoPort = (await startHostmeServe(repoPlain, cleanup)).port;
    profRepoPort = (await startHostmeServe(repoProf, cleanup)).port;
  }

  // (g) (h): the reference disk and kernel with a virtio-blk initrd, snapshotted at HOSTME-READY.
  let snapRepoPort = 0;
  const snapshotObjects = new Set<string>();
  if (['g', 'h', 'i', 'j'].some((id) => wanted.has(id))) {
    const t = performance.now();
    const snap = await snapshotReferenceGuest(path.join(tmp, 'snap'), { disk1g: true });
    const made = await runCommand(process.execPath, [hostmeBin, 'snapshot', 'hello', '--repo', snap.repoDir, '--key', snap.keyFile, '--json'], { timeoutMs: 600_000, env });
    prepare = { ...prepare, snapshotMs: performance.now() - t, snapshot: JSON.parse(made.stdout) };
    log(`snapshot image prepared in ${((performance.now() - t) / 1000).toFixed(1)} s: ${made.stdout.trim().replace(/\s+/g, ' ')}`);
    const repo = openRepository(snap.repoDir);
    const image = await repo.loadImage('hello', undefined);
    for (const ref of [image.manifest.qemuSnapshot!.ram, image.manifest.qemuSnapshot!.deviceState]) {
      indexObjects.add(ref.index);
      for (const id of (await repo.readIndex(ref, repo.objects, 'snapshot')).ids) if (!isHole(id)) snapshotObjects.add(id);
    }
    snapRepoPort = (await startHostmeServe(snap.repoDir, cleanup)).port;
  }

  const withProxy = async <T>(targetPort: number, fn: (proxyPort: number) => Promise<T>, port?: number): Promise<{ result: T; counters: WanCounters }> => {
    const proxy = await startWanProxy({ targetPort, rttMs, downMbit: mbit, lifetimeMs: timeoutMs + 600_000, port });
    cleanup.add('proxy', () => proxy.close());
    try {
      const result = await fn(proxy.port);
      return { result, counters: { ...proxy.counters } };
    } finally {
      await proxy.close();
    }
  };
  const toRun = (ms: number, c: WanCounters, detail?: Record<string, unknown>): Run => ({ ms, bytesDown: c.bytesDown, bytesUp: c.bytesUp, connections: c.connections, httpRequests: c.requests, detail });

  const bootLocal = async (kernel: string, disk: string): Promise<number> => {
    const t = performance.now();
    const vm = await launchVm({ kernel, cmdline: guest.cmdline, disks: [{ file: disk, readOnly: true }], memoryMiB: guest.memoryMiB, cpus: guest.cpus, arch: guest.arch, accel, console: 'none', until: READY, timeoutMs });
    cleanup.add('vm', () => vm.shutdown());
    await vm.ready;
    const ms = performance.now() - t;
    await withTimeout(vm.exited, 30_000, 'qemu exit');
    return ms;
  };

  const download = async (url: string, file: string): Promise<number> => {
    const response = await fetch(url);
    if (!response.ok || !response.body) throw new Error(`${url}: HTTP ${response.status}`);
    await pipeline(Readable.fromWeb(response.body as import('node:stream/web').ReadableStream), createWriteStream(file));
    return (await stat(file)).size;
  };

  // ---- the scenarios: one function per measured run, executed round-robin
  // (run 1 of every scenario, then run 2, ...) so background load hits them alike.
  const scenarioA: Scenario = { id: 'a', title: 'local disk + kernel (no network)', runs: [] };
  const steps: Array<{ scenario: Scenario; once: (i: number) => Promise<Run> }> = [];
  if (wanted.has('a') || wanted.has('b')) {
    steps.push({ scenario: scenarioA, once: async () => ({ ms: await bootLocal(guest.kernel, guest.disk1g), bytesDown: 0, bytesUp: 0, connections: 0, httpRequests: 0 }) });
  }

  // (b) download everything, then boot
  const scenarioB: Scenario = { id: 'b', title: `download raw disk + kernel, boot locally${opts.full ? '' : ' (ESTIMATED)'}`, runs: [] };
  if (wanted.has('b') && opts.full) {
    steps.push({
      scenario: scenarioB,
      once: async () => {
        const dir = await mkdtemp(path.join(tmp, 'dl-'));
        try {
          const { result, counters } = await withProxy(plainPort, async (port) => {
            const t = performance.now();
            await Promise.all([download(`http://127.0.0.1:${port}/disk-1g.raw`, path.join(dir, 'disk.raw')), download(`http://127.0.0.1:${port}/vmlinux`, path.join(dir, 'vmlinux'))]);
            const downloadMs = performance.now() - t;
            const bootMs = await bootLocal(path.join(dir, 'vmlinux'), path.join(dir, 'disk.raw'));
            return { downloadMs, bootMs };
          });
          return toRun(result.downloadMs + result.bootMs, counters, result);
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      },
    });
  }

  // (c) stock QEMU: kernel through the proxy, qcow2 overlay over http, copy-on-read
  const scenarioC: Scenario = { id: 'c', title: 'stock QEMU: kernel download + qcow2/http backing, copy-on-read', runs: [], note: 'the stock user must download the kernel too (included in time and bytes); kernel download and qemu-img create run side by side' };
  if (wanted.has('c')) {
    steps.push({
      scenario: scenarioC,
      once: async () => {
        const dir = await mkdtemp(path.join(tmp, 'stock-'));
        try {
          const { result, counters } = await withProxy(plainPort, async (port) => {
            const t = performance.now();
            const kernel = path.join(dir, 'vmlinux');
            const overlay = path.join(dir, 'ov.qcow2');
            const backing = `json:${JSON.stringify({ file: { driver: 'http', url: `http://127.0.0.1:${port}/disk-1g.raw`, readahead: 0 } })}`;
            let kernelDoneMs = 0;
            let overlayDoneMs = 0;
            await Promise.all([
              download(`http://127.0.0.1:${port}/vmlinux`, kernel).then(() => (kernelDoneMs = performance.now() - t)),
              runCommand('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', backing, overlay], { timeoutMs: 60_000 }).then(() => (overlayDoneMs = performance.now() - t)),
            ]);
            const qemuStartMs = performance.now() - t;
            const blockdev = { driver: 'copy-on-read', 'node-name': 'd0', file: { driver: 'qcow2', file: { driver: 'file', filename: overlay } } };
            const vm = await launchVm({ kernel, cmdline: guest.cmdline, disks: [], memoryMiB: guest.memoryMiB, cpus: guest.cpus, arch: guest.arch, accel, console: 'none', until: READY, timeoutMs, extraArgs: ['-blockdev', JSON.stringify(blockdev), '-device', 'nvme,drive=d0,serial=d0'] });
            cleanup.add('vm', () => vm.shutdown());
            await vm.ready;
            const ms = performance.now() - t;
            await withTimeout(vm.exited, 30_000, 'qemu exit');
            return { ms, kernelDoneMs, overlayDoneMs, qemuStartMs, guestBootMs: ms - qemuStartMs, overlayFileBytes: (await stat(overlay)).size };
          });
          return toRun(result.ms, counters, { ...result, kernelBytes: kernelSize, diskAndOtherBytes: counters.bytesDown - kernelSize });
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      },
    });
  }

  // (d) (e) (f) hostme
  // The profiled image is always reached at the same URL, as a user would: the warm run (f)
  // then finds its instance pinned to the version the cold run (e) used.
  const stableProxyPort = await freePort();
  const hostmeRun = async (port: number, cacheDir: string, label: string, fresh = true, answer = false, lazyRam = false): Promise<Run> => {
    const traceFile = path.join(tmp, `trace-${label}-${Date.now()}.json`);
    const statsFile = path.join(tmp, `stats-${label}-${Date.now()}.json`);
    const { result, counters } = await withProxy(port, async (proxyPort) => {
      const t = performance.timeOrigin + performance.now();
      await runCommand(
        process.execPath,
        ['--import', path.join(repoRoot, 'dist', 'bench', 'trace-hook.js'), hostmeBin, 'run', `http://127.0.0.1:${proxyPort}/i/hello`, '--cache', cacheDir, ...(answer ? ['--until', 'hi-42', '--type', 'echo hi-$((6*7))\\n'] : ['--until', 'HOSTME-READY']), '--timeout', String(timeoutMs / 1000), '--console', 'none', '--stats-json', statsFile, ...(fresh ? ['--fresh'] : [])],
        { timeoutMs: timeoutMs + 60_000, env: { ...env, HOSTME_BENCH_TRACE: traceFile, HOSTME_LAZY_RAM: lazyRam ? '1' : '0', ...(answer ? { HOSTME_BENCH_READY: 'hi-42' } : {}) } },
      );
      return { spawnWall: t };
    }, stableProxyPort);
    const trace = JSON.parse(await readFile(traceFile, 'utf8')) as Trace;
    const stats = JSON.parse(await readFile(statsFile, 'utf8')) as Record<string, unknown>;
    if (trace.ready === undefined) throw new Error(`hostme run (${label}) never showed HOSTME-READY`);
    const at = (t: number) => trace.timeOrigin + t - result.spawnWall; // ms since the command started
    const kinds: Record<string, { requests: number; bytes: number; firstStart: number; lastEnd: number; beforeQemu: number }> = {};
    for (const r of trace.requests) {
      const url = new URL(r.url);
      const id = /\/objects\/[0-9a-f]{2}\/([0-9a-f]{64})$/.exec(url.pathname)?.[1];
      const kind = id ? (indexObjects.has(id) ? 'index' : kernelObjects.has(id) ? 'kernel' : diskObjects.has(id) ? 'disk' : snapshotObjects.has(id) ? 'snapshot' : 'object?') : 'metadata';
      const k = (kinds[kind] ??= { requests: 0, bytes: 0, firstStart: Infinity, lastEnd: 0, beforeQemu: 0 });
      k.requests++;
      k.bytes += r.bytes;
      k.firstStart = Math.min(k.firstStart, at(r.t - r.ms));
      k.lastEnd = Math.max(k.lastEnd, at(r.t));
      if (trace.qemuSpawn !== undefined && r.t <= trace.qemuSpawn) k.beforeQemu++;
    }
    const phases = {
      nodeStartedMs: at(trace.hookLoaded),
      firstRequestMs: Math.min(...Object.values(kinds).map((k) => k.firstStart)),
      metadataDoneMs: kinds.metadata?.lastEnd,
      indexDoneMs: kinds.index?.lastEnd,
      kernelFirstMs: kinds.kernel?.firstStart,
      kernelDoneMs: kinds.kernel?.lastEnd,
      qemuSpawnMs: trace.qemuSpawn !== undefined ? at(trace.qemuSpawn) : undefined,
      readyMs: at(trace.ready),
      guestBootMs: trace.qemuSpawn !== undefined ? trace.ready - trace.qemuSpawn : undefined,
      hostmeMsToReady: stats.msToReady,
    };
    return toRun(at(trace.ready), counters, { phases, byKind: kinds, hostmeStats: stats });
  };
  const freshCache = async () => mkdtemp(path.join(tmp, 'cache-'));
  const scenarioD: Scenario = { id: 'd', title: 'hostme cold, no prefetch profile', runs: [] };
  const scenarioE: Scenario = { id: 'e', title: 'hostme cold, with prefetch profile', runs: [] };
  const scenarioF: Scenario = { id: 'f', title: 'hostme warm (cache and instance from e: no network)', runs: [] };
  if (wanted.has('d')) steps.push({ scenario: scenarioD, once: async (i) => hostmeRun(plainRepoPort, await freshCache(), `d${i}`) });
  let lastCache = '';
  if (wanted.has('e') || wanted.has('f')) {
    const cold = async (i: number) => hostmeRun(profRepoPort, (lastCache = await freshCache()), `e${i}`);
    if (wanted.has('e')) steps.push({ scenario: scenarioE, once: cold });
    else steps.push({ scenario: { id: 'fill', title: 'fill the cache for f (not reported)', runs: [] }, once: cold });
  }
  if (wanted.has('f')) steps.push({ scenario: scenarioF, once: async (i) => hostmeRun(profRepoPort, lastCache, `f${i}`, false) });
  const scenarioG: Scenario = { id: 'g', title: 'hostme resume of a QEMU snapshot, cold cache (to a typed command answered)', runs: [] };
  const scenarioH: Scenario = { id: 'h', title: 'hostme resume, warm (cache and instance from g: no network)', runs: [] };
  let snapCache = '';
  if (wanted.has('g') || wanted.has('h')) {
    const cold = async (i: number) => hostmeRun(snapRepoPort, (snapCache = await freshCache()), `g${i}`, true, true);
    steps.push({ scenario: wanted.has('g') ? scenarioG : { id: 'fill-g', title: 'fill the cache for h (not reported)', runs: [] }, once: cold });
  }
  if (wanted.has('h')) steps.push({ scenario: scenarioH, once: async (i) => hostmeRun(snapRepoPort, snapCache, `h${i}`, false, true) });
  const scenarioI: Scenario = { id: 'i', title: 'hostme resume, cold cache, lazy RAM (working set first, the rest on demand)', runs: [] };
  const scenarioJ: Scenario = { id: 'j', title: 'hostme resume, warm, lazy RAM (cache and instance from i: no network)', runs: [] };
  let lazyCache = '';
  if (wanted.has('i') || wanted.has('j')) {
    const cold = async (i: number) => hostmeRun(snapRepoPort, (lazyCache = await freshCache()), `i${i}`, true, true, true);
    steps.push({ scenario: wanted.has('i') ? scenarioI : { id: 'fill-i', title: 'fill the cache for j (not reported)', runs: [] }, once: cold });
  }
  if (wanted.has('j')) steps.push({ scenario: scenarioJ, once: async (i) => hostmeRun(snapRepoPort, lazyCache, `j${i}`, false, true, true) });

  for (let i = 0; i < runs; i++) {
    for (const { scenario, once } of steps) {
      const load = loadavg()[0]!;
      const run = await once(i);
      run.loadavg1 = Number(load.toFixed(2));
      scenario.runs.push(run);
      const p = run.detail?.phases as Record<string, number> | undefined;
      const extra = p ? `; kernel done ${fmtSeconds(p.kernelDoneMs ?? NaN)}, QEMU spawned ${fmtSeconds(p.qemuSpawnMs ?? NaN)}, guest ${fmtSeconds(p.guestBootMs ?? NaN)}` : scenario.id === 'c' ? `; kernel ${fmtSeconds(Number(run.detail!.kernelDoneMs))}, guest ${fmtSeconds(Number(run.detail!.guestBootMs))}` : '';
      log(`${scenario.id} run ${i + 1}: ${fmtSeconds(run.ms)}, ${fmtBytes(run.bytesDown)}, ${run.httpRequests} requests / ${run.connections} connections (load ${load.toFixed(2)})${extra}`);
    }
  }
  if (wanted.has('a')) scenarios.push(scenarioA);
  if (wanted.has('b')) {
    if (!opts.full) {
      const bytes = diskSize + kernelSize;
      const transferMs = ((bytes * 8) / (mbit * 1e6)) * 1000;
      for (const a of scenarioA.runs) scenarioB.runs.push({ ms: a.ms + transferMs + rttMs, bytesDown: bytes, bytesUp: 0, connections: 2, httpRequests: 2, estimated: true, detail: { transferMs, bootMs: a.ms } });
      scenarioB.note = `estimated = (a) + ${fmtBytes(bytes)} at ${mbit} Mbit/s (${fmtSeconds(transferMs)}) + 1 RTT; run with --full to measure`;
    }
    scenarios.push(scenarioB);
  }
  for (const s of [scenarioC, scenarioD, scenarioE, scenarioF, scenarioG, scenarioH, scenarioI, scenarioJ]) if (wanted.has(s.id)) scenarios.push(s);

  // ---- medians, ratios, goals
  for (const s of scenarios) {
    s.median = { ms: median(s.runs.map((r) => r.ms)), bytesDown: median(s.runs.map((r) => r.bytesDown)), connections: median(s.runs.map((r) => r.connections)), httpRequests: median(s.runs.map((r) => r.httpRequests)) };
  }
  const get = (id: string) => scenarios.find((s) => s.id === id)?.median;
  const a = get('a');
  const c = get('c');
  const e = get('e');
  const f = get('f');
  const g = get('g');
  const h = get('h');
  const lazy = get('i');
  const lazyWarm = get('j');
  const ratios = Object.fromEntries(scenarios.map((s) => [s.id, { toA: a ? s.median!.ms / a.ms : null, toC: c ? s.median!.ms / c.ms : null, bytesToC: c ? s.median!.bytesDown / c.bytesDown : null }]));
  const goal = (name: string, ok: boolean | undefined, detail: string) => ({ goal: name, status: ok === undefined ? 'N/A' : ok ? 'PASS' : 'MISS', detail });
  const goals = [
    goal('(e) <= 1.10 x (a)', e && a ? e.ms <= 1.1 * a.ms : undefined, e && a ? `${fmtSeconds(e.ms)} vs limit ${fmtSeconds(1.1 * a.ms)} (${fmtRatio(e.ms / a.ms)})` : 'needs a and e'),
    goal('(e) <= 0.8 x (c)', e && c ? e.ms <= 0.8 * c.ms : undefined, e && c ? `${fmtSeconds(e.ms)} vs limit ${fmtSeconds(0.8 * c.ms)} (${fmtRatio(e.ms / c.ms)})` : 'needs c and e'),
    goal('bytes(e) <= 0.7 x bytes(c)', e && c ? e.bytesDown <= 0.7 * c.bytesDown : undefined, e && c ? `${fmtBytes(e.bytesDown)} vs limit ${fmtBytes(0.7 * c.bytesDown)} (${fmtRatio(e.bytesDown / c.bytesDown)})` : 'needs c and e'),
    goal('(f) <= 1.05 x (a) with 0 bytes', f && a ? f.ms <= 1.05 * a.ms && f.bytesDown === 0 : undefined, f && a ? `${fmtSeconds(f.ms)} vs limit ${fmtSeconds(1.05 * a.ms)} (${fmtRatio(f.ms / a.ms)}), ${fmtBytes(f.bytesDown)} on the wire` : 'needs a and f'),
    goal('(g) <= 0.8 x (a)', g && a ? g.ms <= 0.8 * a.ms : undefined, g && a ? `${fmtSeconds(g.ms)} vs limit ${fmtSeconds(0.8 * a.ms)} (${fmtRatio(g.ms / a.ms)})` : 'needs a and g'),
    goal('(i) <= 0.8 x (a)', lazy && a ? lazy.ms <= 0.8 * a.ms : undefined, lazy && a ? `${fmtSeconds(lazy.ms)} vs limit ${fmtSeconds(0.8 * a.ms)} (${fmtRatio(lazy.ms / a.ms)})` : 'needs a and i'),
    goal('(j) <= 0.5 x (a)', lazyWarm && a ? lazyWarm.ms <= 0.5 * a.ms : undefined, lazyWarm && a ? `${fmtSeconds(lazyWarm.ms)} vs limit ${fmtSeconds(0.5 * a.ms)} (${fmtRatio(lazyWarm.ms / a.ms)})` : 'needs a and j'),
    goal('(h) <= 0.5 x (a)', h && a ? h.ms <= 0.5 * a.ms : undefined, h && a ? `${fmtSeconds(h.ms)} vs limit ${fmtSeconds(0.5 * a.ms)} (${fmtRatio(h.ms / a.ms)})` : 'needs a and h'),
  ];

  // ---- report
  const rows = [['scenario', 'ready (median)', 'bytes on wire', 'req / conn', 'vs (a)', 'vs (c)', 'bytes vs (c)']];
  for (const s of scenarios) {
    const m = s.median!;
    const r = ratios[s.id]!;
    rows.push([`(${s.id}) ${s.title}`, fmtSeconds(m.ms), fmtBytes(m.bytesDown), `${m.httpRequests} / ${m.connections}`, fmtRatio(r.toA ?? NaN), fmtRatio(r.toC ?? NaN), fmtRatio(r.bytesToC ?? NaN)]);
  }
  const out: string[] = [];
  out.push(`\nboot benchmark: 1 GiB reference disk, link RTT ${rttMs} ms / ${mbit} Mbit/s down (Node TCP proxy), accel ${accel}, ${runs} run(s), medians\n`);
  out.push(table(rows));
  for (const s of scenarios) if (s.note) out.push(`  (${s.id}) ${s.note}`);
  const phaseRows = [['hostme phases (median, s since command start)', 'node up', '1st req', 'manifest', 'index', 'kernel done', 'QEMU spawn', 'ready', 'guest boot', 'kernel bytes', 'disk bytes', 'snapshot bytes', 'meta+index bytes']];
  for (const s of scenarios.filter((x) => ['d', 'e', 'f', 'g', 'h', 'i', 'j'].includes(x.id))) {
    const ph = (k: string) => median(s.runs.map((r) => Number((r.detail!.phases as Record<string, number | undefined>)[k] ?? NaN)));
    const bk = (k: string) => median(s.runs.map((r) => (r.detail!.byKind as Record<string, { bytes: number }>)[k]?.bytes ?? 0));
    phaseRows.push([`(${s.id})`, ...['nodeStartedMs', 'firstRequestMs', 'metadataDoneMs', 'indexDoneMs', 'kernelDoneMs', 'qemuSpawnMs', 'readyMs', 'guestBootMs'].map((k) => fmtSeconds(ph(k))), fmtBytes(bk('kernel')), fmtBytes(bk('disk')), fmtBytes(bk('snapshot')), fmtBytes(bk('metadata') + bk('index'))]);
  }
  if (phaseRows.length > 1) out.push('\n' + table(phaseRows));
  const cs = scenarios.find((x) => x.id === 'c');
  if (cs) {
    const d = (k: string) => median(cs.runs.map((r) => Number(r.detail![k])));
    out.push(`\n(c) phases (median): kernel downloaded ${fmtSeconds(d('kernelDoneMs'))}, overlay created ${fmtSeconds(d('overlayDoneMs'))}, QEMU started ${fmtSeconds(d('qemuStartMs'))}, guest boot ${fmtSeconds(d('guestBootMs'))}; kernel ${fmtBytes(kernelSize)} + disk/other ${fmtBytes(d('diskAndOtherBytes'))}`);
  }
  out.push('\ngoals:');
  for (const g of goals) out.push(`  ${g.status.padEnd(4)}  ${g.goal.padEnd(32)} ${g.detail}`);
  process.stdout.write(out.join('\n') + '\n');

  await writeJson(opts.out, {
    date: new Date().toISOString(),
    machine: { ...machineInfo(), accel, accelReason: probe.reason, accelProbeMs: Math.round(probeMs) },
    link: { rttMs, downMbit: mbit, upMbit: null, emulation: 'Node TCP proxy on 127.0.0.1 (src/bench/wan-proxy.ts): +RTT/2 per chunk each way, shared token bucket downstream' },
    image: { disk: guest.disk1g, diskBytes: diskSize, kernel: guest.kernel, kernelBytes: kernelSize, kernelStoredBytes: kernelStored || null, kernelObjects: kernelObjects.size || null },
    options: { runs, full: opts.full, scenarios: [...wanted] },
    preparation: { ...prepare, plainServerEtagWarmMs: Math.round(plainWarmMs) },
    scenarios,
    ratios,
    goals,
  });
  log(`results written to ${path.relative(process.cwd(), opts.out)}`);
}

runBench('boot', main, cleanup);

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
