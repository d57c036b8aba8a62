import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { WebSocket } from 'ws';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { hostmeBin, runCli } from '../testing/published-guest.js';
import { bootNetGuest } from '../testing/net-guest.js';
import type { VmHandle } from '../vm/qemu.js';
import {
  BROADCAST_MAC,
  buildArp,
  buildEth,
  buildIpv4,
  buildUdp,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  formatIp,
  internetChecksum,
  IPPROTO_ICMP,
  IPPROTO_UDP,
  parseArp,
  parseEth,
  parseIp,
  parseIpv4,
  parseUdp,
  writeMac,
} from './frame.js';

// `hostme serve --net` (a separate process) is the hub: a QEMU guest joins
// its switch through the control socket, a WebSocket client speaking raw
// Ethernet (what v86's relay_url speaks) joins with a token; they get
// addresses, resolve and ping each other. Without a valid token: a 401 that
// says what to do.
let work: string;
let hub: ChildProcessWithoutNullStreams;
let hubUrl: string;
let netDir: string;
let vm: VmHandle | undefined;

before(async () => {
  work = await tempDir('hmnet-hub-');
  const repo = path.join(work, 'repo');
  await mkdir(repo);
  netDir = path.join(repo, '.net');
  hub = spawn(process.execPath, [hostmeBin, 'serve', repo, '--port', '0', '--net', '--json', '--quiet']);
  hub.stderr.on('data', (d: Buffer) => process.stderr.write(`hub: ${d.toString()}`));
  let out = '';
  hubUrl = await new Promise<string>((resolve, reject) => {
    hub.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      try {
        resolve((JSON.parse(out) as { url: string }).url);
      } catch {
        // not complete yet
      }
    });
    hub.once('exit', (code) => reject(new Error(`hostme serve exited ${code}`)));
  });
});

after(async () => {
  await vm?.shutdown().catch(() => {});
  hub?.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 300));
  hub?.kill('SIGKILL');
  await removeDir(work);
});

/** A minimal IPv4 host over a WebSocket: DHCP client, ARP and ping responder, DNS and ping client. */
class WsGuest {
  readonly mac = 0x020000a1b2c3;
  ip = 0;
  gateway = 0;
  private readonly waiters: Array<{ match: (f: Buffer) => boolean; resolve: (f: Buffer) => void }> = [];
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => this.onFrame(data));
  }
  static open(url: string): Promise<WsGuest> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.once('open', () => resolve(new WsGuest(ws)));
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => reject(Object.assign(new Error(body), { status: res.statusCode })));
      });
      ws.once('error', reject);
    });
  }
  private onFrame(frame: Buffer): void {
    const eth = parseEth(frame)!;
    if (eth.type === ETHERTYPE_ARP) {
      const arp = parseArp(frame);
      if (arp?.op === 1 && arp.targetIp === this.ip && this.ip !== 0) this.send(buildEth(arp.senderMac, this.mac, ETHERTYPE_ARP, buildArp({ op: 2, senderMac: this.mac, senderIp: this.ip, targetMac: arp.senderMac, targetIp: arp.senderIp })));
    }
    const ip = eth.type === ETHERTYPE_IPV4 ? parseIpv4(frame) : undefined;
    if (ip?.proto === IPPROTO_ICMP && ip.dst === this.ip && ip.payload[0] === 8) {
      const reply = Buffer.from(ip.payload);
      reply[0] = 0;
      reply.writeUInt16BE(0, 2);
      reply.writeUInt16BE(internetChecksum(reply), 2);
      this.send(buildEth(eth.src, this.mac, ETHERTYPE_IPV4, buildIpv4(this.ip, ip.src, IPPROTO_ICMP, reply)));
    }
    const i = this.waiters.findIndex((w) => w.match(frame));
    if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve(frame);
  }
  send(frame: Buffer): void {
    this.ws.send(frame);
  }
  expect(match: (f: Buffer) => boolean, timeoutMs = 30_000): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no matching frame')), timeoutMs);
      this.waiters.push({ match, resolve: (f) => (clearTimeout(timer), resolve(f)) });
    });
  }
  private udpReply(port: number) {
    return (f: Buffer) => {
      const ip = parseIpv4(f);
      const udp = ip && parseUdp(ip);
      return udp?.dstPort === port;
    };
  }
  async dhcp(): Promise<number> {
    const request = (type: number, requested?: number) => {
      const b = Buffer.alloc(300);
      b.set([1, 1, 6], 0);
      b.writeUInt32BE(0xabcdef01, 4);
      writeMac(b, 28, this.mac);
      b.writeUInt32BE(0x63825363, 236);
      b.set([53, 1, type], 240);
      if (requested !== undefined) {
        b.set([50, 4], 243);
        b.writeUInt32BE(requested, 245);
        b[249] = 255;
      } else b[243] = 255;
      this.send(buildEth(BROADCAST_MAC, this.mac, ETHERTYPE_IPV4, buildIpv4(0, 0xffffffff, IPPROTO_UDP, buildUdp(0, 0xffffffff, 68, 67, b))));
      return this.expect(this.udpReply(68)).then((f) => parseUdp(parseIpv4(f)!)!.payload);
    };
    const offer = await request(1);
    const ack = await request(3, offer.readUInt32BE(16));
    this.ip = ack.readUInt32BE(16);
    this.gateway = ack.readUInt32BE(20);
    return this.ip;
  }
  async resolve(name: string): Promise<string> {
    const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
    const query = Buffer.concat([Buffer.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), ...labels, Buffer.from([0, 0, 1, 0, 1])]);
    this.send(buildEth(0x02686d000001, this.mac, ETHERTYPE_IPV4, buildIpv4(this.ip, this.gateway, IPPROTO_UDP, buildUdp(this.ip, this.gateway, 5353, 53, query))));
    const answer = parseUdp(parseIpv4(await this.expect(this.udpReply(5353)))!)!.payload;
    assert.equal(answer.readUInt16BE(6), 1, `one answer for ${name}`);
    return formatIp(answer.readUInt32BE(answer.length - 4));
  }
  async ping(target: string): Promise<void> {
    const dst = parseIp(target)!;
    this.send(buildEth(BROADCAST_MAC, this.mac, ETHERTYPE_ARP, buildArp({ op: 1, senderMac: this.mac, senderIp: this.ip, targetMac: 0, targetIp: dst })));
    const arp = parseArp(await this.expect((f) => parseArp(f)?.op === 2 && parseArp(f)?.senderIp === dst))!;
    const echo = Buffer.from([8, 0, 0, 0, 0x77, 0x77, 0, 1, 1, 2, 3, 4]);
    echo.writeUInt16BE(internetChecksum(echo), 2);
    this.send(buildEth(arp.senderMac, this.mac, ETHERTYPE_IPV4, buildIpv4(this.ip, dst, IPPROTO_ICMP, echo)));
    await this.expect((f) => {
      const ip = parseIpv4(f);
      return ip?.proto === IPPROTO_ICMP && ip.src === dst && ip.payload[0] === 0;
    });
  }
}

test('a join without a valid token is refused with a clear message', async () => {
  await assert.rejects(WsGuest.open(`${hubUrl.replace('http', 'ws')}/net/demo?token=nope&instance=tab`), (err: Error & { status?: number }) => {
    assert.equal(err.status, 401);
    assert.match(err.message, /no valid join token for network demo: ask the hub's operator for one \(hostme net token demo\)/);
    return true;
  });
});

test('a QEMU guest on the hub and a WebSocket guest get addresses, resolve and ping each other', { timeout: 600_000 }, async () => {
  const issued = await runCli(['net', 'token', 'demo', '--dir', netDir]);
  assert.equal(issued.code, 0, issued.stderr);
  const token = issued.stdout.trim();

  const web = await bootNetGuest({ work, network: 'demo', instance: 'web', join: { dir: netDir }, onLaunch: (launched) => (vm = launched) });
  const webIp = web.ip;
  vm = web.vm;

  const tab = await WsGuest.open(`${hubUrl.replace('http', 'ws')}/net/demo?token=${encodeURIComponent(token)}&instance=tab1`);
  try {
    const tabIp = formatIp(await tab.dhcp());
    assert.notEqual(tabIp, webIp);
    assert.equal(await tab.resolve('web.demo.hostme'), webIp);
    await tab.ping(webIp!);
    const since = vm.consoleLength;
    vm.sendConsole('ping -c 1 -W 5 tab1.demo.hostme; echo PINGED rc=$?\n');
    const [, rc] = await vm.waitForConsole(/PINGED rc=(\d+)/, { timeoutMs: 60_000, since });
    assert.equal(rc, '0', vm.console.slice(-500));
    // A spoofed source from the tab is dropped and counted.
    tab.send(buildEth(BROADCAST_MAC, tab.mac, ETHERTYPE_IPV4, buildIpv4(parseIp(webIp!)!, 0xffffffff, IPPROTO_UDP, buildUdp(parseIp(webIp!)!, 0xffffffff, 9, 9, Buffer.alloc(8)))));
    await new Promise((r) => setTimeout(r, 300));
    const ls = await runCli(['net', 'ls', '--dir', netDir, '--json']);
    const ports = (JSON.parse(ls.stdout) as Array<{ name: string; ports: Array<{ kind: string; instance: string; counters: { drops: { spoofed: number } } }> }>)[0]!.ports;
    assert.deepEqual(ports.map((p) => p.kind).sort(), ['qemu', 'websocket']);
    assert.equal(ports.find((p) => p.kind === 'websocket')!.counters.drops.spoofed, 1);
  } finally {
    tab.ws.close();
  }
});
