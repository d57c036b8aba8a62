/**
 * Benchmark (not a test): sequential read throughput of a fully cached disk
 * through hostme's run stack (NbdServer → CowOverlay → ChunkedImageDevice →
 * FetchScheduler → CacheStore, every chunk verified) versus qemu-nbd serving
 * the raw file, all read with `nbdcopy URI null:`. A third row, hostme's
 * NbdServer over the plain raw file, isolates the protocol cost. Runs alternate (hostme, qemu-nbd, hostme, ...) so page
 * cache and CPU frequency effects hit both sides alike; median of N runs.
 *
 *   node dist/bench/nbd.bench.js [--size-mib 512] [--runs 3]
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
import { runBench } from './bench-util.js';

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

    const hostmeUri = `nbd+unix:///?socket=${hostmeSock}`;
    const qemuUri = `nbd+unix:///?socket=${qemuSock}`;
    const cachedUri = `nbd+unix:///?socket=${cachedSock}`;
    // Warm-up: pull the file and the cache into the page cache through each server once.
    await timedCopy(hostmeUri);
    await timedCopy(qemuUri);
    await timedCopy(cachedUri);
    const verifiedUri = `nbd+unix:///?socket=${verifiedSock}`;
    await timedCopy(verifiedUri); // verifies every chunk once and keeps it
    await verifiedStack.verified!.flush();
    const verifiedSecs: number[] = [];

    const hostmeSecs: number[] = [];
    const qemuSecs: number[] = [];
    const cachedSecs: number[] = [];
    for (let i = 0; i < runs; i++) {
      cachedSecs.push(await timedCopy(cachedUri));
      verifiedSecs.push(await timedCopy(verifiedUri));
      hostmeSecs.push(await timedCopy(hostmeUri));
      qemuSecs.push(await timedCopy(qemuUri));
    }
    const mbps = (secs: number): number => sizeBytes / MiB / secs;
    const hostmeMBps = mbps(median(hostmeSecs));
    const qemuNbdMBps = mbps(median(qemuSecs));
    const cachedMBps = mbps(median(cachedSecs));
    const ratio = cachedMBps / qemuNbdMBps;
    const verifiedMBps = mbps(median(verifiedSecs));

    const row = (name: string, secs: number[], m: number): string =>
      `${name.padEnd(10)} ${secs.map((s) => mbps(s).toFixed(0).padStart(7)).join(' ')}   median ${m.toFixed(0).padStart(6)} MiB/s`;
    console.log(`sequential read, ${sizeBytes / MiB} MiB raw file, nbdcopy -> null:, ${runs} runs, ${os.cpus().length} CPUs`);
    console.log(row('hostme run stack, fully cached image', cachedSecs, cachedMBps));
    console.log(row('hostme run stack, verified once (warm)', verifiedSecs, verifiedMBps));
    console.log(row('hostme NbdServer, raw file', hostmeSecs, hostmeMBps));
    console.log(row('qemu-nbd, raw file (baseline)', qemuSecs, qemuNbdMBps));
    console.log(`ratio verified-once / qemu-nbd = ${(verifiedMBps / qemuNbdMBps).toFixed(2)} (goal >= 0.70)`);
    console.log(`ratio cached image / qemu-nbd = ${ratio.toFixed(2)}; raw-file protocol ratio = ${(hostmeMBps / qemuNbdMBps).toFixed(2)}`);

    const result = {
      date: new Date().toISOString(),
      machine: os.cpus().length,
      sizeBytes,
      cachedImageMBps: Math.round(cachedMBps * 10) / 10,
      hostmeRawFileMBps: Math.round(hostmeMBps * 10) / 10,
      qemuNbdMBps: Math.round(qemuNbdMBps * 10) / 10,
      ratio: Math.round(ratio * 1000) / 1000,
      verifiedOnceMBps: Math.round(verifiedMBps * 10) / 10,
      verifiedOnceRatio: Math.round((verifiedMBps / qemuNbdMBps) * 1000) / 1000,
      rawFileRatio: Math.round((hostmeMBps / qemuNbdMBps) * 1000) / 1000,
      runs: { cachedSecs, verifiedSecs, hostmeSecs, qemuSecs },
      stats: server.stats,
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
