/**
 * npm run bench:pack — pack throughput of the 1 GiB reference disk, hostme pack
 * vs casync make (blob mode, defaults), then the share of new bytes when a
 * guest rebuilt with one file changed is packed into the same repo / store.
 * Options: --runs N (3) --out FILE --keep-tmp
 */
import { mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadReferenceGuest } from '../testing/reference-guest.js';
import { Cleanup, runBench, fmtBytes, fmtRatio, hostmeBin, log, machineInfo, median, repoRoot, runCommand, table, writeJson } from './bench-util.js';

const { values: opts } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    out: { type: 'string', default: path.join(repoRoot, 'bench', 'results', 'pack.json') },
    'keep-tmp': { type: 'boolean', default: false },
  },
});
const runs = Math.max(1, Number(opts.runs));
const cleanup = new Cleanup();

interface PackRun {
  ms: number;
  mbps: number;
  storedBytes: number;
  chunks: number;
  /** hostme's own figure (pack work only, without process start). */
  reportedMBps?: number;
}

/** Chunk files (and their bytes) in a casync store. */
async function storeContents(store: string): Promise<Map<string, number>> {
  const files = new Map<string, number>();
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, entry.name);
      if (entry.isDirectory()) await walk(p);
      else if (entry.name.endsWith('.cacnk')) files.set(entry.name, (await stat(p)).size);
    }
  };
  await walk(store);
  return files;
}

const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

async function main(): Promise<void> {
  const guest = loadReferenceGuest();
  const disk = guest.disk1g;
  const size = (await stat(disk)).size;
  const tmpParent = path.join(repoRoot, '.cache', 'bench-tmp');
  await mkdir(tmpParent, { recursive: true });
  const tmp = await mkdtemp(path.join(tmpParent, 'pack-'));
  if (!opts['keep-tmp']) cleanup.add('tmp', () => rm(tmp, { recursive: true, force: true }));
  const key = path.join(tmp, 'publisher.key');
  await runCommand(process.execPath, [hostmeBin, 'keygen', key], { timeoutMs: 30_000 });
  const casyncVersion = (await runCommand('casync', ['--version'], { timeoutMs: 10_000 })).stdout.trim().split('\n')[0];

  // Same page-cache state for both tools: read the file once before any run.
  await runCommand('cat', [disk], { timeoutMs: 120_000 });

  const hostme: PackRun[] = [];
  const casync: PackRun[] = [];
  let lastRepo = '';
  let lastStore = '';
  // Interleaved, so background load hits both tools alike.
  for (let i = 0; i < runs; i++) {
    const repo = path.join(tmp, `repo-${i}`);
    const t = performance.now();
    const r = await runCommand(process.execPath, [hostmeBin, 'pack', disk, '--repo', repo, '--name', 'hello', '--key', key, '--json'], { timeoutMs: 600_000 });
    const ms = performance.now() - t;
    const s = JSON.parse(r.stdout) as { newChunks: number; storedBytes: number; throughputMBps: number };
    // A fresh repo: every stored object is new (holes and duplicate chunks have none).
    hostme.push({ ms, mbps: size / 1e6 / (ms / 1000), storedBytes: s.storedBytes, chunks: s.newChunks, reportedMBps: s.throughputMBps });
    log(`hostme pack run ${i + 1}: ${(ms / 1000).toFixed(2)} s, ${(size / 1e6 / (ms / 1000)).toFixed(0)} MB/s (hostme says ${s.throughputMBps.toFixed(0)} MB/s), ${fmtBytes(s.storedBytes)} stored`);
    if (i > 0) await rm(path.join(tmp, `repo-${i - 1}`), { recursive: true, force: true });
    lastRepo = repo;

    const store = path.join(tmp, `store-${i}.castr`);
    const t2 = performance.now();
    await runCommand('casync', ['make', `--store=${store}`, path.join(tmp, `out-${i}.caibx`), disk], { timeoutMs: 600_000 });
    const ms2 = performance.now() - t2;
    const contents = await storeContents(store);
    casync.push({ ms: ms2, mbps: size / 1e6 / (ms2 / 1000), storedBytes: sum(contents), chunks: contents.size });
    log(`casync make run ${i + 1}: ${(ms2 / 1000).toFixed(2)} s, ${(size / 1e6 / (ms2 / 1000)).toFixed(0)} MB/s, ${fmtBytes(sum(contents))} in ${contents.size} chunks`);
    if (i > 0) await rm(path.join(tmp, `store-${i - 1}.castr`), { recursive: true, force: true });
    lastStore = store;
  }

  // ---- one file changed
  const variantDir = path.join(tmp, 'variant');
  log('building the variant guest (one file changed)');
  await runCommand('bash', [path.join(repoRoot, 'scripts', 'guest', 'build-reference.sh'), '--variant-dir', variantDir, '--extra-file', '/etc/motd=changed'], { timeoutMs: 300_000, cwd: repoRoot });
  const variant = path.join(variantDir, 'disk-1g.raw');
  await runCommand('cat', [variant], { timeoutMs: 120_000 });
  const tv = performance.now();
  const vr = await runCommand(process.execPath, [hostmeBin, 'pack', variant, '--repo', lastRepo, '--name', 'hello', '--key', key, '--json'], { timeoutMs: 600_000 });
  const hostmeVariantMs = performance.now() - tv;
  const v = JSON.parse(vr.stdout) as { chunks: number; holes: number; newChunks: number; reusedChunks: number; newStoredBytes: number; storedBytes: number };
  const before = await storeContents(lastStore);
  const tc = performance.now();
  await runCommand('casync', ['make', `--store=${lastStore}`, path.join(tmp, 'variant.caibx'), variant], { timeoutMs: 600_000 });
  const casyncVariantMs = performance.now() - tc;
  const after = await storeContents(lastStore);
  const fresh = [...after.keys()].filter((k) => !before.has(k));
  const freshBytes = fresh.reduce((a, k) => a + after.get(k)!, 0);
  const hostmeObjects = v.newChunks + v.reusedChunks;
  const change = {
    hostme: {
      newChunks: v.newChunks,
      chunks: v.chunks,
      objects: hostmeObjects,
      holes: v.holes,
      newStoredBytes: v.newStoredBytes,
      storedBytes: v.storedBytes,
      newByteShare: v.newStoredBytes / v.storedBytes,
      newChunkShare: v.newChunks / hostmeObjects,
      ms: hostmeVariantMs,
    },
    casync: {
      newChunks: fresh.length,
      chunksBefore: before.size,
      newStoredBytes: freshBytes,
      storedBytesBefore: sum(before),
      newByteShare: freshBytes / sum(before),
      newChunkShare: fresh.length / before.size,
      ms: casyncVariantMs,
    },
  };

  // ---- report
  const med = (xs: PackRun[], k: keyof PackRun) => median(xs.map((x) => Number(x[k])));
  const rows = [
    ['', 'hostme pack', 'casync make', 'hostme/casync'],
    ['time (median)', `${(med(hostme, 'ms') / 1000).toFixed(2)} s`, `${(med(casync, 'ms') / 1000).toFixed(2)} s`, fmtRatio(med(hostme, 'ms') / med(casync, 'ms'))],
    ['throughput (median, wall)', `${med(hostme, 'mbps').toFixed(0)} MB/s`, `${med(casync, 'mbps').toFixed(0)} MB/s`, fmtRatio(med(hostme, 'mbps') / med(casync, 'mbps'))],
    ['stored', fmtBytes(med(hostme, 'storedBytes')), fmtBytes(med(casync, 'storedBytes')), fmtRatio(med(hostme, 'storedBytes') / med(casync, 'storedBytes'))],
    ['objects / chunk files stored', String(med(hostme, 'chunks')), String(med(casync, 'chunks')), ''],
    ['one file changed: new bytes', `${fmtBytes(change.hostme.newStoredBytes)} (${(change.hostme.newByteShare * 100).toFixed(2)}%)`, `${fmtBytes(change.casync.newStoredBytes)} (${(change.casync.newByteShare * 100).toFixed(2)}%)`, fmtRatio(change.hostme.newStoredBytes / change.casync.newStoredBytes)],
    ['one file changed: new chunks', `${change.hostme.newChunks}/${hostmeObjects} (${(change.hostme.newChunkShare * 100).toFixed(2)}%)`, `${change.casync.newChunks}/${change.casync.chunksBefore} (${(change.casync.newChunkShare * 100).toFixed(2)}%)`, ''],
    ['variant pack time', `${(hostmeVariantMs / 1000).toFixed(2)} s`, `${(casyncVariantMs / 1000).toFixed(2)} s`, fmtRatio(hostmeVariantMs / casyncVariantMs)],
  ];
  process.stdout.write(`\npack benchmark: ${fmtBytes(size)} reference disk (${path.basename(disk)}), ${runs} run(s) each, interleaved, page cache warm; ${casyncVersion} defaults (blob mode)\n\n${table(rows)}\n`);
  process.stdout.write(`\nhostme: fixed ${fmtBytes(size / v.chunks)} chunks (${v.chunks} slots, ${v.holes} holes); casync: content-defined chunks (default 64 KiB average).\n`);
  await writeJson(opts.out, {
    date: new Date().toISOString(),
    machine: machineInfo(),
    input: { disk, bytes: size, variant, change: '/etc/motd=changed' },
    tools: { hostme: 'hostme pack (default chunk size, zstd level 3)', casync: `${casyncVersion}, casync make --store (defaults)` },
    runs: { hostme, casync },
    medians: {
      hostme: { ms: med(hostme, 'ms'), mbps: med(hostme, 'mbps'), storedBytes: med(hostme, 'storedBytes') },
      casync: { ms: med(casync, 'ms'), mbps: med(casync, 'mbps'), storedBytes: med(casync, 'storedBytes') },
      throughputRatioHostmeToCasync: med(hostme, 'mbps') / med(casync, 'mbps'),
    },
    oneFileChanged: change,
  });
  log(`results written to ${path.relative(process.cwd(), opts.out)}`);
}

runBench('pack', main, cleanup);
