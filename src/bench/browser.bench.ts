/**
 * bench:browser — click → shell answered in the browser tab (docs/bench.md):
 * the i686 guest cold-booted by v86 in the run page vs resumed from its
 * memory snapshot, at full loopback speed and through an emulated WAN link
 * (src/bench/wan-proxy.ts, default 50 Mbit/s, 100 ms RTT). Every run is a
 * fresh Chromium profile (empty browser cache), so the page, v86, the BIOS
 * and the image all come over the link, as on a first visit.
 *
 * "Shell answered": the page reaches its ready state (HOSTME-READY printed, or
 * the snapshot resumed), then `echo "answer $((6*7))"` is typed into the
 * terminal and the clock stops when "answer 42" comes back.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { rm } from 'node:fs/promises';
import { startRepoServer, type RequestLogEntry } from '../server/server.js';
import { loadPrivateKey } from '../pack/publisher-key.js';
import { snapshotImage } from '../snapshot/index.js';
import { launchChromium, prepareWeb, publishWebRepo, waitForRunState, waitForTranscript } from '../web/web-fixtures.js';
import { Cleanup, runBench, fmtBytes, fmtRatio, fmtSeconds, log, machineInfo, median, repoRoot, table, writeJson } from './bench-util.js';
import { startWanProxy } from './wan-proxy.js';

const { values: opts } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    'cold-runs': { type: 'string', default: '1' },
    rtt: { type: 'string', default: '100' },
    mbit: { type: 'string', default: '50' },
    timeout: { type: 'string', default: '420' },
    /** Pointer on "Run here" this long before the click (the intent start). */
    'hover-ms': { type: 'string', default: '500' },
    starts: { type: 'string', default: 'snapshot,intent,cold' },
    out: { type: 'string', default: path.join(repoRoot, 'bench', 'results', 'browser.json') },
  },
});
const snapshotRuns = Math.max(1, Number(opts.runs));
const coldRuns = Math.max(1, Number(opts['cold-runs']));
const rttMs = Number(opts.rtt);
const mbit = Number(opts.mbit);
const timeoutMs = Number(opts.timeout) * 1000;
const hoverMs = Number(opts['hover-ms']);
const GOAL_MS = 2500;

/**
 * cold: the run page with ?boot=cold; snapshot: navigation straight to the run page;
 * intent: the image page, the pointer on "Run here" for --hover-ms, then the click.
 */
type Start = 'cold' | 'snapshot' | 'intent';
const starts = new Set(String(opts.starts).split(',') as Start[]);
type Link = 'loopback' | 'wan';

interface Measurement {
  start: Start;
  link: Link;
  run: number;
  /** Navigation start (intent: the click) → the page's ready state. */
  readyMs: number;
  /** Navigation start → the typed command's answer on the console. */
  answeredMs: number;
  /** The page's own milestones, ms since navigation (manifest, v86Loaded, startBlobs, ready). */
  pageTimings: Record<string, number>;
  /** Bytes the server sent (loopback) or that crossed the emulated link (wan). */
  bytes: number;
  requests: number;
}

async function measure(pageUrl: string, start: Start): Promise<{ readyMs: number; answeredMs: number; pageTimings: Record<string, number> }> {
  const browser = await launchChromium();
  try {
    const page = await browser.context.newPage();
    let started = performance.now();
    if (start === 'intent') {
      // The clock starts at the click: the hover before it is the visitor's, not the page's.
      await page.goto(pageUrl.replace(/\/run$/, ''));
      const link = page.getByRole('link', { name: 'Run here, in this tab' });
      await link.hover();
      await new Promise((r) => setTimeout(r, hoverMs));
      started = performance.now();
      await link.click();
    } else await page.goto(start === 'cold' ? `${pageUrl}?boot=cold` : pageUrl);
    await waitForRunState(page, ['ready', 'error'], timeoutMs, 100);
    const readyMs = performance.now() - started;
    const state = await page.evaluate(() => ({ state: document.body.dataset.state, start: document.body.dataset.start, message: document.getElementById('message')?.textContent }));
    if (state.state !== 'ready') throw new Error(`the run page failed: ${state.message}`);
    if (state.start !== (start === 'cold' ? 'boot' : 'restore')) throw new Error(`asked for ${start}, the page did ${state.start}`);
    await page.locator('#terminal .xterm-helper-textarea').focus();
    await page.keyboard.type('echo "answer $((6*7))"\n');
    await waitForTranscript(page, /answer 42/, 60_000, 50);
    const answeredMs = performance.now() - started;
    const pageTimings = await page.evaluate(() => (window as unknown as { hostmeRun: { timings: Record<string, number> } }).hostmeRun.timings);
    return { readyMs, answeredMs, pageTimings };
  } finally {
    await browser.close();
  }
}

async function main(): Promise<void> {
  const cleanup = new Cleanup();
  try {
    const prepared = prepareWeb();
    if ('skip' in prepared) throw new Error(`cannot run: ${prepared.skip}`);
    log('publishing hello-i686 and taking its snapshot (one cold boot in v86 under Node)');
    const { base, repoDir } = await publishWebRepo(prepared.guest);
    cleanup.add('repo', () => rm(base, { recursive: true, force: true }));
    const snap = await snapshotImage({ repoDir, name: 'hello-i686', key: await loadPrivateKey(path.join(base, 'publisher.key')), until: /HOSTME-READY/ });
    log(`snapshot: ${fmtBytes(snap.stateBytes)} state, ${fmtBytes(snap.storedBytes)} stored`);

    const served: RequestLogEntry[] = [];
    const server = await startRepoServer({ repoDir, logger: (e) => served.push(e) });
    cleanup.add('server', () => server.close());
    const port = Number(new URL(server.url).port);

    const results: Measurement[] = [];
    const once = async (start: Start, link: Link, run: number): Promise<void> => {
      const from = served.length;
      let measured: { readyMs: number; answeredMs: number; pageTimings: Record<string, number> };
      let bytes: number;
      let requests: number;
      if (link === 'loopback') {
        measured = await measure(`${server.url}/i/hello-i686/run`, start);
        const sent = served.slice(from);
        bytes = sent.reduce((sum, r) => sum + r.bytes, 0);
        requests = sent.length;
      } else {
        const proxy = await startWanProxy({ targetPort: port, rttMs, downMbit: mbit, lifetimeMs: timeoutMs + 120_000 });
        try {
          measured = await measure(`http://127.0.0.1:${proxy.port}/i/hello-i686/run`, start);
        } finally {
          await proxy.close();
        }
        bytes = proxy.counters.bytesDown;
        requests = served.length - from;
      }
      results.push({ start, link, run, ...measured, bytes, requests });
      log(`${start} over ${link}, run ${run}: ready ${fmtSeconds(measured.readyMs)}, answered ${fmtSeconds(measured.answeredMs)}, ${fmtBytes(bytes)} in ${requests} requests; page ${JSON.stringify(measured.pageTimings)}`);
    };
    // Round-robin, so background load hits every case alike.
    for (let run = 1; run <= Math.max(snapshotRuns, coldRuns); run++) {
      for (const link of ['loopback', 'wan'] as const) {
        if (run <= snapshotRuns && starts.has('snapshot')) await once('snapshot', link, run);
        if (run <= snapshotRuns && starts.has('intent')) await once('intent', link, run);
        if (run <= coldRuns && starts.has('cold')) await once('cold', link, run);
      }
    }
    await report(results, snap);
  } finally {
    await cleanup.run();
  }
}

async function report(results: Measurement[], snap: { stateBytes: number; storedBytes: number; msToReady: number }): Promise<void> {
  const pick = (start: Start, link: Link) => results.filter((r) => r.start === start && r.link === link);
  const summary = (['loopback', 'wan'] as const).map((link) => {
    const row = (rs: Measurement[]) =>
      rs.length ? { answeredMs: median(rs.map((r) => r.answeredMs)), readyMs: median(rs.map((r) => r.readyMs)), bytes: median(rs.map((r) => r.bytes)), requests: median(rs.map((r) => r.requests)) } : undefined;
    const c = row(pick('cold', link));
    const s = row(pick('snapshot', link));
    const i = row(pick('intent', link));
    return { link, cold: c, snapshot: s, intent: i, ratio: s && c ? s.answeredMs / c.answeredMs : undefined, intentRatio: i && c ? i.answeredMs / c.answeredMs : undefined };
  });
  const rows = [['link', 'start', 'ready', 'answered', 'bytes', 'requests', 'snapshot / cold']];
  for (const s of summary) {
    const line = (label: string, r: typeof s.cold, ratio: number | undefined) => {
      if (r) rows.push([s.link, label, fmtSeconds(r.readyMs), fmtSeconds(r.answeredMs), fmtBytes(r.bytes), String(r.requests), ratio === undefined ? '-' : fmtRatio(ratio)]);
    };
    line('cold boot', s.cold, 1);
    line('snapshot (navigation)', s.snapshot, s.ratio);
    line(`snapshot (${hoverMs} ms hover, from click)`, s.intent, s.intentRatio);
  }
  const wan = summary.find((s) => s.link === 'wan')!;
  const best = Math.min(wan.snapshot?.answeredMs ?? Infinity, wan.intent?.answeredMs ?? Infinity);
  const goal = { snapshotAnsweredMsOnWan: wan.snapshot?.answeredMs, intentAnsweredMsOnWan: wan.intent?.answeredMs, hoverMs, goalMs: GOAL_MS, met: best <= GOAL_MS };
  process.stdout.write(`\nbench:browser (median; snapshot runs ${snapshotRuns}, cold runs ${coldRuns}; wan = ${mbit} Mbit/s, ${rttMs} ms RTT)\n${table(rows)}\n`);
  process.stdout.write(`goal: click → answered ≤ ${GOAL_MS / 1000} s on the emulated link: navigation ${goal.snapshotAnsweredMsOnWan === undefined ? '-' : fmtSeconds(goal.snapshotAnsweredMsOnWan)}, after a ${hoverMs} ms hover ${goal.intentAnsweredMsOnWan === undefined ? '-' : fmtSeconds(goal.intentAnsweredMsOnWan)}: ${goal.met ? 'MET' : 'MISSED'}\n`);
  await writeJson(opts.out!, { bench: 'browser', when: new Date().toISOString(), machine: machineInfo(), link: { rttMs, mbit }, snapshot: snap, summary, goal, runs: results });
}

runBench('browser', main);
