/**
 * Benchmark (not a test): read throughput of a fully cached disk through
 * hostme's run stack (NbdServer → CowOverlay → ChunkedImageDevice →
 * verify-once file, as `hostme run` reads a disk it verified before) versus
 * qemu-nbd serving the raw file: sequential with `nbdcopy URI null:`, and
 * 4 KiB random reads with fio's nbd engine (queue depth 32, IOPS). Two more
 * rows: the same stack without the verify-once file (every chunk read from
 * the object cache is decoded and hashed again: what verify-once removes),
 * and hostme's NbdServer over the plain raw file (the protocol cost alone).
 * Runs alternate (hostme, ..., qemu-nbd, hostme, ...) so page cache, CPU
 * frequency and load from other processes hit every side alike; median of N.
 *
 *   node dist/bench/nbd.bench.js [--size-mib 512] [--runs 3] [--rand-secs 4]
 *
 * Writes bench/results/nbd.json.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdir, mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FileDevice } from '../nbd/file-device.js';
import { NbdServer } from '../nbd/server.js';
import { packImage } from '../pack/pack-image.js';
import { openRepository } from '../repo/repository.js';
import { generatePublisherKey, parsePrivateKeyPem } from '../format/node/keys.js';
import { DirStore } from '../store/node/dir-store.js';
import { CacheStore } from '../store/cache-store.js';
import { FetchScheduler } from '../store/fetch-scheduler.js';
import { openImageDisks } from '../device/image-disks.js';
import type { ChunkIndex } from '../format/chunk-index.js';
import { VerifiedChunkFile } from '../device/node/verified-chunks.js';
import type { BlockDevice } from '../device/block-device.js';
import type { ObjectSource } from '../store/object-store.js';
import { openFileOverlay } from '../device/node/cow-file.js';
import { machineInfo, runBench } from './bench-util.js';

const MiB = 1024 * 1024;

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

function runCommand(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr.trim()}`))));
  });
}

async function timedCopy(uri: string): Promise<number> {
  const start = process.hrtime.bigint();
  await runCommand('nbdcopy', [uri, 'null:']);
  return Number(process.hrtime.bigint() - start) / 1e9;
}

async function socketExists(sock: string): Promise<boolean> {
  try {
    return (await stat(sock)).isSocket();
  } catch {
    return false;
  }
}

async function waitForSocket(sock: string, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`qemu-nbd exited early with ${child.exitCode}`);
    if (await socketExists(sock)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('qemu-nbd did not start listening');
}

async function makeFile(file: string, size: number): Promise<void> {
  const fh = await open(file, 'w');
  const chunk = Buffer.allocUnsafe(4 * MiB);
  try {
    for (let at = 0; at < size; at += chunk.length) {
      randomFillSync(chunk);
      await fh.write(chunk, 0, Math.min(chunk.length, size - at), at);
    }
  } finally {
    await fh.close();
  }
}

/** The disk packed into a repository that serves as a fully populated cache, read like `hostme run` reads it. */
async function cachedImageStack(file: string, dir: string, verifyOnce = false): Promise<{ device: BlockDevice; verified?: VerifiedChunkFile; close(): Promise<void> }> {
  const repoDir = path.join(dir, verifyOnce ? 'cache-v' : 'cache');
  const repo = openRepository(repoDir);
  const key = parsePrivateKeyPem(generatePublisherKey().privatePem);
  await packImage({ repo, workDir: dir, disk: file, name: 'bench', version: '1', key });
  const image = await repo.loadImage('bench', '1');
  const offline: ObjectSource = {
    name: 'offline',
    get: async () => {
      throw new Error('the benchmark cache should hold every chunk');
    },
    has: async () => false,
    close: async () => {},
  };
  const scheduler = new FetchScheduler(new CacheStore(new DirStore(repoDir), offline), 8);
  const overlayDir = path.join(dir, verifyOnce ? 'overlay-v' : 'overlay');
  await mkdir(overlayDir);
  // The stack hostme run assembles (openImageDisks); verify once (docs/run.md): chunks verified by the warm-up pass are then read from the verified file.
  let verified: VerifiedChunkFile | undefined;
  const [disk] = await openImageDisks(image.manifest, scheduler, {
    ...(verifyOnce ? { verified: async (_: number, index: ChunkIndex) => (verified = await VerifiedChunkFile.open(path.join(dir, 'verified'), index)) } : {}),
    overlay: (device) => openFileOverlay(device, overlayDir),
  });
  const overlay = disk!.overlay!;
  return { device: overlay, verified, close: () => overlay.close() };
}

/** 4 KiB random reads for `secs` seconds at queue depth 32 (fio's nbd engine, libnbd): IOPS. */
async function randomReadIops(uri: string, sizeBytes: number, secs: number): Promise<number> {
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn('fio', ['--name=rand4k', '--ioengine=nbd', `--uri=${uri}`, '--rw=randread', '--bs=4k', '--iodepth=32', '--numjobs=1', '--time_based', `--runtime=${secs}`, `--size=${sizeBytes}`, '--output-format=json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`fio exited ${code}: ${stderr.trim()}`))));
  });
  // The nbd engine prints a connection notice before the JSON document.
  const iops = Number((JSON.parse(out.slice(out.indexOf('{'))) as { jobs: Array<{ read: { iops: number } }> }).jobs[0]?.read.iops);
  if (!Number.isFinite(iops) || iops <= 0) throw new Error(`fio reported no read IOPS for ${uri}`);
  return iops;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main(): Promise<void> {
  const sizeBytes = arg('--size-mib', 512) * MiB;
  const runs = arg('--runs', 3);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hostme-nbd-bench-'));
  const file = path.join(dir, 'disk.raw');
  const hostmeSock = path.join(dir, 'hostme.sock');
  const qemuSock = path.join(dir, 'qemu.sock');
  let qemu: ChildProcess | undefined;
  const device = await (async () => {
    await makeFile(file, sizeBytes);
    return FileDevice.open(file, { readOnly: true });
  })();
  const server = new NbdServer({ exports: device, onError: (err) => console.error('hostme nbd error:', err) });
  const cachedSock = path.join(dir, 'cached.sock');
  const cached = await cachedImageStack(file, dir);
  const cachedServer = new NbdServer({ exports: cached.device, onError: (err) => console.error('hostme nbd error:', err) });
  const verifiedSock = path.join(dir, 'verified.sock');
  const verifiedStack = await cachedImageStack(file, dir, true);
  const verifiedServer = new NbdServer({ exports: verifiedStack.device, onError: (err) => console.error('hostme nbd error:', err) });
  try {
    await verifiedServer.listen(verifiedSock);
    await server.listen(hostmeSock);
    await cachedServer.listen(cachedSock);
    // -t: persistent (several nbdcopy runs); -e 16: allow nbdcopy's parallel connections.
    qemu = spawn('qemu-nbd', ['-r', '-f', 'raw', '-t', '-e', '16', '-k', qemuSock, file], { stdio: ['ignore', 'ignore', 'inherit'] });
    await waitForSocket(qemuSock, qemu);

    const uris = {
      verified: `nbd+unix:///?socket=${verifiedSock}`,
      cached: `nbd+unix:///?socket=${cachedSock}`,
      raw: `nbd+unix:///?socket=${hostmeSock}`,
      qemu: `nbd+unix:///?socket=${qemuSock}`,
    };
    type Side = keyof typeof uris;
    const sides = Object.keys(uris) as Side[];
    // Warm-up: pull the file and the cache into the page cache through each server once;
    // the verify-once stack verifies every chunk once here and keeps it.
    for (const side of sides) await timedCopy(uris[side]);
    await verifiedStack.verified!.flush();
    const seqSecs: Record<Side, number[]> = { verified: [], cached: [], raw: [], qemu: [] };
    const randIops: Record<Side, number[]> = { verified: [], cached: [], raw: [], qemu: [] };
    const randSecs = arg('--rand-secs', 4);
    for (let i = 0; i < runs; i++) {
      for (const side of sides) seqSecs[side].push(await timedCopy(uris[side]));
      for (const side of sides) randIops[side].push(await randomReadIops(uris[side], sizeBytes, randSecs));
    }
    const mbps = (secs: number): number => sizeBytes / MiB / secs;
    const seq = Object.fromEntries(sides.map((side) => [side, mbps(median(seqSecs[side]))])) as Record<Side, number>;
    const rand = Object.fromEntries(sides.map((side) => [side, median(randIops[side])])) as Record<Side, number>;
    const labels: Record<Side, string> = {
      verified: 'hostme run stack, verified once (warm)',
      cached: 'same stack, no verify-once file (decode + hash)',
      raw: 'hostme NbdServer, raw file',
      qemu: 'qemu-nbd, raw file (baseline)',
    };
    const r3 = (x: number): number => Math.round(x * 1000) / 1000;
    console.log(`${sizeBytes / MiB} MiB raw file, ${runs} runs, ${os.cpus().length} CPUs, loadavg ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
    console.log(`${'reader'.padEnd(48)} ${'seq MiB/s'.padStart(10)} ${'x qemu'.padStart(7)} ${'4K IOPS'.padStart(9)} ${'x qemu'.padStart(7)}`);
    for (const side of sides) {
      console.log(`${labels[side].padEnd(48)} ${seq[side].toFixed(0).padStart(10)} ${(seq[side] / seq.qemu).toFixed(2).padStart(7)} ${rand[side].toFixed(0).padStart(9)} ${(rand[side] / rand.qemu).toFixed(2).padStart(7)}`);
    }
    console.log(`goal: verified-once stack >= 0.70 x qemu-nbd, sequential ${(seq.verified / seq.qemu).toFixed(2)}, random 4 KiB ${(rand.verified / rand.qemu).toFixed(2)}`);

    const result = {
      date: new Date().toISOString(),
      machine: machineInfo(),
      loadavgAtEnd: os.loadavg(),
      sizeBytes,
      note: 'side by side in one run, alternating readers; the machine is shared (see loadavg): ratios, not absolute figures, are what compare',
      goal: 'the fully cached run stack (verify-once file, as hostme run reads a disk it verified before) >= 0.7 x qemu-nbd on the raw file, sequential and 4 KiB random reads',
      sequential: {
        tool: 'nbdcopy URI null: (libnbd defaults: 4 connections, 64 requests in flight each)',
        MiBps: Object.fromEntries(sides.map((side) => [side, Math.round(seq[side] * 10) / 10])),
        ratioToQemuNbd: Object.fromEntries(sides.map((side) => [side, r3(seq[side] / seq.qemu)])),
        secs: seqSecs,
      },
      random4k: {
        tool: `fio --ioengine=nbd --rw=randread --bs=4k --iodepth=32 --runtime=${randSecs}`,
        iops: Object.fromEntries(sides.map((side) => [side, Math.round(rand[side])])),
        ratioToQemuNbd: Object.fromEntries(sides.map((side) => [side, r3(rand[side] / rand.qemu)])),
        runs: randIops,
      },
      labels,
      // The names earlier results used.
      cachedImageMBps: Math.round(seq.cached * 10) / 10,
      verifiedOnceMBps: Math.round(seq.verified * 10) / 10,
      hostmeRawFileMBps: Math.round(seq.raw * 10) / 10,
      qemuNbdMBps: Math.round(seq.qemu * 10) / 10,
      verifiedOnceRatio: r3(seq.verified / seq.qemu),
      rawFileRatio: r3(seq.raw / seq.qemu),
      stats: { verified: verifiedServer.stats, raw: server.stats },
    };
    await mkdir('bench/results', { recursive: true });
    await writeFile('bench/results/nbd.json', JSON.stringify(result, null, 2) + '\n');
    console.log('wrote bench/results/nbd.json');
  } finally {
    qemu?.kill('SIGTERM');
    await cachedServer.close();
    await cached.close();
    await verifiedServer.close();
    await verifiedStack.close();
    await server.close();
    await device.close();
    await rm(dir, { recursive: true, force: true });
  }
}

runBench('nbd', main);
