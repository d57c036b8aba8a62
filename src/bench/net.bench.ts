/**
 * npm run bench:net — frames per second and added latency through the
 * hostme switch (its own process, QEMU stream ports over unix sockets)
 * against vde_switch (Debian vde2, reached through vde_plug's stdio plug),
 * forwarding the same 64-byte and 1500-byte frames between two ports, side
 * by side in one run. The baseline for latency is a direct unix socket pair
 * (no switch): added latency = (switch RTT − direct RTT) / 2 per traversal.
 *
 * Throughput: port A sends with at most WINDOW frames in flight (both
 * switches drop on overload, so an open-loop sender would measure drops),
 * port B counts, for DURATION_MS. Writes bench/results/net.json.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { controlRequest } from '../net/control.js';
import { BROADCAST_MAC, buildArp, buildEth, buildIpv4, buildUdp, ETHERTYPE_ARP, ETHERTYPE_IPV4, IPPROTO_UDP, parseIp } from '../net/frame.js';
import type { Lease } from '../net/registry.js';
import { frameForStream, StreamDeframer } from '../net/stream-port.js';
import { Cleanup, runBench, fmtRatio, hostmeBin, log, machineInfo, table, writeJson } from './bench-util.js';

const DURATION_MS = 2000;
const WINDOW = 256;
const PINGS = 2000;
const SIZES = [64, 1500] as const;
const MAC_A = 0x525400000a0a;
const MAC_B = 0x525400000b0b;

/** One end of a two-port path: send frames, get frames. */
interface Endpoint {
  send(frame: Buffer): void;
  onFrame: (frame: Buffer) => void;
}

interface Path {
  name: string;
  a: Endpoint;
  b: Endpoint;
  ipA: number;
  ipB: number;
}

function endpointOverSocket(socket: net.Socket | NodeJS.WritableStream, frameOut: (f: Buffer) => Buffer): Endpoint {
  const endpoint: Endpoint = {
    send: (frame) => void (socket as NodeJS.WritableStream).write(frameOut(frame)),
    onFrame: () => {},
  };
  return endpoint;
}

/** vde_plug's stdio stream: 2-byte big-endian length + frame. */
function vdeFrame(frame: Buffer): Buffer {
  const out = Buffer.allocUnsafe(2 + frame.length);
  out.writeUInt16BE(frame.length, 0);
  frame.copy(out, 2);
  return out;
}

function vdeDeframer(onFrame: (f: Buffer) => void): (chunk: Buffer) => void {
  let pending = Buffer.alloc(0);
  return (chunk) => {
    let buf = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
      const length = buf.readUInt16BE(0);
      onFrame(buf.subarray(2, 2 + length));
      buf = buf.subarray(2 + length);
    }
    pending = Buffer.from(buf);
  };
}

function udpFrame(size: number, srcMac: number, dstMac: number, src: number, dst: number): Buffer {
  const payload = Buffer.alloc(size - 14 - 20 - 8, 0x5a);
  return buildEth(dstMac, srcMac, ETHERTYPE_IPV4, buildIpv4(src, dst, IPPROTO_UDP, buildUdp(src, dst, 9000, 9000, payload)));
}

async function throughput(p: Path, size: number): Promise<number> {
  const frame = udpFrame(size, MAC_A, MAC_B, p.ipA, p.ipB);
  let sent = 0;
  let received = 0;
  let measuring = false;
  let counted = 0;
  let wake: (() => void) | undefined;
  p.b.onFrame = () => {
    received++;
    if (measuring) counted++;
    wake?.();
  };
  const started = performance.now();
  let measureStart = 0;
  while (performance.now() - started < DURATION_MS + 300) {
    if (!measuring && performance.now() - started > 300) {
      measuring = true;
      measureStart = performance.now();
    }
    while (sent - received < WINDOW) {
      p.a.send(frame);
      sent++;
    }
    // Wait for the receiver (or give up on lost frames after a while).
    await Promise.race([new Promise<void>((r) => (wake = r)), sleep(50).then(() => (received = Math.max(received, sent - WINDOW / 2)))]);
    wake = undefined;
  }
  const seconds = (performance.now() - measureStart) / 1000;
  await sleep(200);
  return counted / seconds;
}

async function latency(p: Path, size: number): Promise<{ p50: number; p99: number }> {
  const there = udpFrame(size, MAC_A, MAC_B, p.ipA, p.ipB);
  const back = udpFrame(size, MAC_B, MAC_A, p.ipB, p.ipA);
  p.b.onFrame = () => p.b.send(back);
  const rtts: number[] = [];
  for (let i = 0; i < PINGS + 100; i++) {
    const t0 = performance.now();
    const arrived = new Promise<void>((resolve) => (p.a.onFrame = () => resolve()));
    p.a.send(there);
    const ok = await Promise.race([arrived.then(() => true), sleep(1000).then(() => false)]);
    if (ok && i >= 100) rtts.push(performance.now() - t0);
  }
  rtts.sort((x, y) => x - y);
  return { p50: rtts[Math.floor(rtts.length * 0.5)]!, p99: rtts[Math.floor(rtts.length * 0.99)]! };
}

/** Accepts one connection on a unix socket, as QEMU's `-netdev stream,server=on` does. */
function listenOnce(socketPath: string): Promise<{ server: net.Server; connected: Promise<net.Socket> }> {
  return new Promise((resolve) => {
    let onConnection: (s: net.Socket) => void = () => {};
    const connected = new Promise<net.Socket>((r) => (onConnection = r));
    const server = net.createServer((s) => onConnection(s));
    server.listen(socketPath, () => resolve({ server, connected }));
  });
}

async function hostmePath(dir: string, cleanup: Cleanup): Promise<Path> {
  const child = spawn(process.execPath, [hostmeBin, 'net', 'switchd', '--dir', dir, '--frames-per-second', '100000000'], { stdio: 'ignore' });
  cleanup.add('hostme switch', () => child.kill('SIGKILL'));
  for (let i = 0; i < 100 && !(await controlRequest(dir, { op: 'ping' }).then(() => true, () => false)); i++) await sleep(100);
  const ends: Endpoint[] = [];
  for (const name of ['a', 'b']) {
    const sock = path.join(dir, `${name}.sock`);
    const { server, connected } = await listenOnce(sock);
    cleanup.add(`listener ${name}`, () => server.close());
    await controlRequest(dir, { op: 'attach', network: 'bench', instance: name, socket: sock });
    const socket = await connected;
    socket.setNoDelay(true);
    const endpoint = endpointOverSocket(socket, frameForStream);
    const deframer = new StreamDeframer((f) => endpoint.onFrame(f), () => {});
    socket.on('data', (c: Buffer) => deframer.push(c));
    cleanup.add(`socket ${name}`, () => socket.destroy());
    ends.push(endpoint);
  }
  // Bind each port to its MAC (an ARP probe), then read the leases.
  ends[0]!.send(buildEth(BROADCAST_MAC, MAC_A, ETHERTYPE_ARP, buildArp({ op: 1, senderMac: MAC_A, senderIp: 0, targetMac: 0, targetIp: 1 })));
  ends[1]!.send(buildEth(BROADCAST_MAC, MAC_B, ETHERTYPE_ARP, buildArp({ op: 1, senderMac: MAC_B, senderIp: 0, targetMac: 0, targetIp: 1 })));
  await sleep(300);
  const leases = (await controlRequest(dir, { op: 'leases', network: 'bench' })).leases as Lease[];
  const ip = (name: string) => parseIp(leases.find((l) => l.instance === name)!.ip)!;
  return { name: 'hostme', a: ends[0]!, b: ends[1]!, ipA: ip('a'), ipB: ip('b') };
}

async function vdePath(dir: string, cleanup: Cleanup): Promise<Path> {
  const sw = path.join(dir, 'vde');
  const pidFile = path.join(dir, 'vde.pid');
  const started = spawn('vde_switch', ['-s', sw, '-d', '-p', pidFile], { stdio: 'inherit' });
  await new Promise((r) => started.once('exit', r));
  cleanup.add('vde_switch', () => process.kill(Number(readFileSync(pidFile, 'utf8').trim()), 'SIGKILL'));
  const ends: Endpoint[] = [];
  const plugs: ChildProcess[] = [];
  for (const name of ['a', 'b']) {
    const plug = spawn('vde_plug', [`vde://${sw}`], { stdio: ['pipe', 'pipe', 'inherit'] });
    plugs.push(plug);
    cleanup.add(`vde_plug ${name}`, () => plug.kill('SIGKILL'));
    const endpoint = endpointOverSocket(plug.stdin!, vdeFrame);
    plug.stdout!.on('data', vdeDeframer((f) => endpoint.onFrame(f)));
    ends.push(endpoint);
  }
  await sleep(300);
  // Let the switch learn both MACs.
  ends[0]!.send(buildEth(BROADCAST_MAC, MAC_A, ETHERTYPE_ARP, buildArp({ op: 1, senderMac: MAC_A, senderIp: 0, targetMac: 0, targetIp: 1 })));
  ends[1]!.send(buildEth(BROADCAST_MAC, MAC_B, ETHERTYPE_ARP, buildArp({ op: 1, senderMac: MAC_B, senderIp: 0, targetMac: 0, targetIp: 1 })));
  await sleep(300);
  return { name: 'vde_switch', a: ends[0]!, b: ends[1]!, ipA: parseIp('10.0.0.1')!, ipB: parseIp('10.0.0.2')! };
}

async function directPath(dir: string, cleanup: Cleanup): Promise<Path> {
  const sock = path.join(dir, 'direct.sock');
  const { server, connected } = await listenOnce(sock);
  cleanup.add('direct listener', () => server.close());
  const client = net.connect(sock);
  const accepted = await connected;
  const ends = [client, accepted].map((socket) => {
    socket.setNoDelay(true);
    const endpoint = endpointOverSocket(socket, frameForStream);
    const deframer = new StreamDeframer((f) => endpoint.onFrame(f), () => {});
    socket.on('data', (c: Buffer) => deframer.push(c));
    cleanup.add('direct socket', () => socket.destroy());
    return endpoint;
  });
  return { name: 'direct', a: ends[0]!, b: ends[1]!, ipA: parseIp('10.0.0.1')!, ipB: parseIp('10.0.0.2')! };
}

async function main(): Promise<void> {
  const cleanup = new Cleanup();
  const dir = await mkdtemp(path.join(tmpdir(), 'hmnb-'));
  cleanup.add('temp dir', () => rm(dir, { recursive: true, force: true }));
  try {
    const hostme = await hostmePath(path.join(dir, 'h'), cleanup);
    const vde = await vdePath(dir, cleanup);
    const direct = await directPath(dir, cleanup);
    const results: Record<string, unknown>[] = [];
    for (const size of SIZES) {
      // Interleaved, so a change in machine load hits both switches alike.
      const fpsHostme = await throughput(hostme, size);
      const fpsVde = await throughput(vde, size);
      const latDirect = await latency(direct, size);
      const latHostme = await latency(hostme, size);
      const latVde = await latency(vde, size);
      const added = (rtt: number) => Math.max(0, (rtt - latDirect.p50) / 2);
      results.push({
        frameBytes: size,
        framesPerSecond: { hostme: Math.round(fpsHostme), vde: Math.round(fpsVde), ratio: fpsHostme / fpsVde },
        rttMs: { direct: latDirect, hostme: latHostme, vde: latVde },
        addedLatencyP50Ms: { hostme: added(latHostme.p50), vde: added(latVde.p50) },
      });
      log(`${size} B done`);
    }
    const rows = [['frame', 'hostme fps', 'vde fps', 'ratio', 'hostme p50 added', 'vde p50 added', 'RTT p50 direct/hostme/vde']];
    for (const r of results as Array<{ frameBytes: number; framesPerSecond: { hostme: number; vde: number; ratio: number }; rttMs: Record<string, { p50: number }>; addedLatencyP50Ms: { hostme: number; vde: number } }>) {
      rows.push([
        `${r.frameBytes} B`,
        String(r.framesPerSecond.hostme),
        String(r.framesPerSecond.vde),
        fmtRatio(r.framesPerSecond.ratio),
        `${r.addedLatencyP50Ms.hostme.toFixed(3)} ms`,
        `${r.addedLatencyP50Ms.vde.toFixed(3)} ms`,
        `${r.rttMs.direct!.p50.toFixed(3)}/${r.rttMs.hostme!.p50.toFixed(3)}/${r.rttMs.vde!.p50.toFixed(3)} ms`,
      ]);
    }
    console.log(table(rows));
    await writeJson('bench/results/net.json', {
      benchmark: 'net',
      date: new Date().toISOString(),
      machine: machineInfo(),
      method: { durationMs: DURATION_MS, window: WINDOW, pings: PINGS, hostmePort: 'QEMU stream (4-byte length) over unix sockets to hostme net switchd', vdePort: 'vde_plug stdio (2-byte length) to vde_switch' },
      results,
    });
    console.log('wrote bench/results/net.json');
  } finally {
    await cleanup.run();
  }
}

runBench('net', main);
