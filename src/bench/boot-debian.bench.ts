/**
 * npm run bench:boot-debian — the realistic guest of issue #14: examples/debian-systemd
 * (Debian 12 minbase, systemd as init, a login prompt on the serial console),
 * measured side by side in one run:
 *  local   QEMU on the built raw disk + kernel + initrd, no network, to `login:`
 *  resume  `hostme run` of its QEMU snapshot over the emulated link (RTT / Mbit below),
 *          empty cache, RAM fetched whole before the resume, to the answer of a
 *          typed user name (`Password:`): the guest's user space ran after the resume
 *  lazy    the same with the RAM served lazily (HOSTME_LAZY_RAM=1), its recorded
 *          working set fetched before QEMU starts
 * Goal: resume <= 0.25 x local. The guest is built (cached) by
 * scripts/guest/build-example.sh debian-systemd (debootstrap, ~6 min the first time).
 * Options: --runs N --rtt MS --mbit N --timeout S --out FILE
 */
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { loadavg } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { launchVm } from '../vm/qemu.js';
import { chooseAccel } from '../vm/accel.js';
import { startWanProxy, type WanCounters } from './wan-proxy.js';
import { Cleanup, runBench, fmtBytes, fmtRatio, fmtSeconds, hostmeBin, log, machineInfo, median, repoRoot, runCommand, startHostmeServe, table, withTimeout, writeJson } from './bench-util.js';

const { values: opts } = parseArgs({
  options: {
    runs: { type: 'string', default: '2' },
    rtt: { type: 'string', default: '100' },
    mbit: { type: 'string', default: '50' },
    timeout: { type: 'string', default: '300' },
    out: { type: 'string', default: path.join(repoRoot, 'bench', 'results', 'boot-debian.json') },
  },
});
const runs = Math.max(1, Number(opts.runs));
const rttMs = Number(opts.rtt);
const mbit = Number(opts.mbit);
const timeoutMs = Number(opts.timeout) * 1000;
const NAME = 'debian-systemd';
const cleanup = new Cleanup();

interface GuestFiles {
  kernel: string;
  initrd: string;
  disk: string;
  cmdline: string;
  memoryMiB: number;
  cpus: number;
}

interface Run {
  ms: number;
  bytesDown: number;
  httpRequests: number;
  loadavg1: number;
  phases?: Record<string, number>;
}

async function buildGuest(): Promise<{ dir: string; files: GuestFiles }> {
  const t = performance.now();
  await runCommand('bash', [path.join(repoRoot, 'scripts', 'guest', 'build-example.sh'), NAME], { timeoutMs: 3_600_000 });
  const dir = path.join(process.env.HOSTME_GUEST_DIR ?? path.join(repoRoot, '.cache', 'guest'), NAME);
  const files = JSON.parse(await readFile(path.join(dir, 'guest.json'), 'utf8')) as GuestFiles;
  log(`guest ${dir} ready in ${fmtSeconds(performance.now() - t)} (cached when nothing changed)`);
  return { dir, files };
}

async function main(): Promise<void> {
  const { accel, reason } = await chooseAccel();
  log(`accel ${accel} (${reason}); link RTT ${rttMs} ms, ${mbit} Mbit/s down; ${runs} run(s) per scenario`);
  const guest = await buildGuest();
  const tmp = await mkdtemp(path.join(repoRoot, '.cache', 'bench-debian-'));
  cleanup.add('tmp', () => rm(tmp, { recursive: true, force: true }));
  const repoDir = path.join(tmp, 'repo');
  await cp(path.join(guest.dir, 'repo'), repoDir, { recursive: true });
  const key = path.join(guest.dir, 'publisher.key');
  const env = { ...process.env, HOSTME_ACCEL: accel };

  // The snapshot at the login prompt: nothing typed before saving or after a resume (a getty would take it as a user name).
  const t = performance.now();
  const made = await runCommand(process.execPath, [hostmeBin, 'snapshot', NAME, '--repo', repoDir, '--key', key, '--until', 'login:', '--guest-command', '', '--after-resume', '', '--json'], { timeoutMs: 1_200_000, env });
  const snapshot = JSON.parse(made.stdout) as Record<string, unknown>;
  log(`snapshot in ${fmtSeconds(performance.now() - t)}: ${made.stdout.trim().replace(/\s+/g, ' ')}`);
  const served = await startHostmeServe(repoDir, cleanup);

  const local = async (): Promise<Run> => {
    const load = loadavg()[0]!;
    const start = performance.now();
    const g = guest.files;
    const vm = await launchVm({ kernel: g.kernel, initrd: g.initrd, cmdline: g.cmdline, disks: [{ file: g.disk, readOnly: true }], memoryMiB: g.memoryMiB, cpus: g.cpus, arch: 'x86_64', accel, console: 'none', until: /login:/, timeoutMs });
    cleanup.add('vm', () => vm.shutdown());
    await vm.ready;
    const ms = performance.now() - start;
    await vm.shutdown();
    await withTimeout(vm.exited, 30_000, 'qemu exit');
    return { ms, bytesDown: 0, httpRequests: 0, loadavg1: load };
  };

  const resume = async (label: string, lazy: boolean): Promise<Run> => {
    const load = loadavg()[0]!;
    const cache = await mkdtemp(path.join(tmp, `cache-${label}-`));
    const statsFile = path.join(tmp, `stats-${label}-${Date.now()}.json`);
    const proxy = await startWanProxy({ targetPort: served.port, rttMs, downMbit: mbit, lifetimeMs: timeoutMs + 600_000 });
    cleanup.add('proxy', () => proxy.close());
    let counters: WanCounters;
    try {
      await runCommand(
        process.execPath,
        [hostmeBin, 'run', `http://127.0.0.1:${proxy.port}/i/${NAME}`, '--cache', cache, '--until', 'Password:', '--type', 'hostme\\n', '--timeout', String(timeoutMs / 1000), '--console', 'none', '--stats-json', statsFile],
        { timeoutMs: timeoutMs + 60_000, env: { ...env, HOSTME_LAZY_RAM: lazy ? '1' : '0' } },
      );
      counters = { ...proxy.counters };
    } finally {
      await proxy.close();
    }
    const stats = JSON.parse(await readFile(statsFile, 'utf8')) as { msToResume?: number; phases?: Record<string, number> };
    if (stats.msToResume === undefined) throw new Error(`hostme run (${label}) did not resume the snapshot: see ${statsFile}`);
    // Milestones are ms since hostme's process started: `ready` is the answer on the console.
    return { ms: stats.phases!.ready!, bytesDown: counters.bytesDown, httpRequests: counters.requests, loadavg1: load, phases: stats.phases };
  };

  // Round robin (run 1 of each, then run 2, ...) so background load hits them alike.
  const scenarios = [
    { id: 'local', title: 'local cold boot to login: (QEMU, raw disk + kernel + initrd)', runs: [] as Run[], once: local },
    { id: 'resume', title: `hostme resume streamed (RAM whole first), to an answered login`, runs: [] as Run[], once: (i: number) => resume(`r${i}`, false) },
    { id: 'lazy', title: `hostme resume streamed (lazy RAM, working set first), to an answered login`, runs: [] as Run[], once: (i: number) => resume(`l${i}`, true) },
  ];
  for (let i = 0; i < runs; i++) {
    for (const s of scenarios) {
      const run = await s.once(i);
      s.runs.push(run);
      log(`${s.id} run ${i + 1}: ${fmtSeconds(run.ms)}, ${fmtBytes(run.bytesDown)} in ${run.httpRequests} requests (load ${run.loadavg1.toFixed(2)})${run.phases ? `; phases ${JSON.stringify(run.phases)}` : ''}`);
    }
  }

  const med = (id: string) => median(scenarios.find((s) => s.id === id)!.runs.map((r) => r.ms));
  const localMs = med('local');
  const rows = [['scenario', 'median', 'bytes on wire', 'vs local']];
  for (const s of scenarios) rows.push([`${s.id}: ${s.title}`, fmtSeconds(med(s.id)), fmtBytes(median(s.runs.map((r) => r.bytesDown))), fmtRatio(med(s.id) / localMs)]);
  const best = Math.min(med('resume'), med('lazy'));
  const goals = [{ goal: 'resume <= 0.25 x local', status: best <= 0.25 * localMs ? 'PASS' : 'MISS', detail: `best resume ${fmtSeconds(best)} vs limit ${fmtSeconds(0.25 * localMs)} (${fmtRatio(best / localMs)})` }];
  process.stdout.write(`\n${NAME}: TCG=${accel === 'tcg'}, link ${rttMs} ms / ${mbit} Mbit/s, ${runs} run(s), medians\n${table(rows)}\n\ngoals:\n${goals.map((g) => `  ${g.status.padEnd(4)}  ${g.goal}  ${g.detail}`).join('\n')}\n`);
  await writeJson(opts.out, {
    date: new Date().toISOString(),
    machine: { ...machineInfo(), accel, accelReason: reason },
    link: { rttMs, downMbit: mbit, emulation: 'Node TCP proxy on 127.0.0.1 (src/bench/wan-proxy.ts)' },
    guest: { name: NAME, ...guest.files },
    preparation: { snapshot },
    scenarios: scenarios.map(({ once: _once, ...s }) => ({ ...s, medianMs: med(s.id), ratioToLocal: med(s.id) / localMs })),
    goals,
  });
  log(`results written to ${path.relative(process.cwd(), opts.out)}`);
}

runBench('boot-debian', main, cleanup);
