import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, test } from 'node:test';
import { BROADCAST_MAC, buildArp, buildEth, buildIpv4, ETHERTYPE_ARP, ETHERTYPE_IPV4, parseEth, parseIpv4 } from './frame.js';
import { buildTcp, IPPROTO_TCP, parseTcp, type TcpSegment } from './gateway-tcp.js';
import { NetRegistry } from './registry.js';
import { NetSwitch, type SwitchPort } from './switch.js';
import { pseudoRandom } from '../testing/fixtures.js';

// The switch's per-port policy (isolation, hostme connect) and the gateway's
// TCP endpoint, with guests played by frames built here.
const dir = mkdtempSync(path.join(tmpdir(), 'hostme-policy-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const GATEWAY_MAC = 0x02686d000001;

class Guest {
  readonly inbox: Buffer[] = [];
  readonly port: SwitchPort;
  constructor(sw: NetSwitch, network: string, readonly mac: number, instance: string, gateway?: Parameters<NetSwitch['attach']>[1]['gateway']) {
    this.port = sw.attach(network, { kind: 'local', instance, send: (f) => this.inbox.push(f), gateway });
    // The first frame binds the port and leases its address.
    this.port.receive(buildEth(BROADCAST_MAC, mac, ETHERTYPE_ARP, buildArp({ op: 1, senderMac: mac, senderIp: 0, targetMac: 0, targetIp: this.port.network.gateway })));
    this.inbox.splice(0);
  }
  get ip(): number {
    return this.port.ip!;
  }
  tcp(dstMac: number, dst: number, seg: Partial<TcpSegment> & { srcPort: number; dstPort: number }): void {
    const full: TcpSegment = { seq: 1000, ack: 0, flags: 0x02, window: 65535, payload: Buffer.alloc(0), ...seg };
    this.port.receive(buildEth(dstMac, this.mac, ETHERTYPE_IPV4, buildIpv4(this.ip, dst, IPPROTO_TCP, buildTcp(this.ip, dst, full))));
  }
  arpFor(ip: number): void {
    this.port.receive(buildEth(BROADCAST_MAC, this.mac, ETHERTYPE_ARP, buildArp({ op: 1, senderMac: this.mac, senderIp: this.ip, targetMac: 0, targetIp: ip })));
  }
  segments(): TcpSegment[] {
    return this.inbox.splice(0).flatMap((f) => {
      const ip = parseEth(f)?.type === ETHERTYPE_IPV4 ? parseIpv4(f) : undefined;
      const seg = ip && parseTcp(ip);
      return seg ? [seg] : [];
    });
  }
}

test('isolated ports reach only the gateway until hostme connect opens one TCP port, and only that', () => {
  const sw = new NetSwitch(new NetRegistry(path.join(dir, 'a')));
  const app = new Guest(sw, 'demo', 0x525400000001, 'app', { isolated: true });
  const db = new Guest(sw, 'demo', 0x525400000002, 'db', { isolated: true });
  const member = new Guest(sw, 'demo', 0x525400000003, 'member');
  const network = app.port.network;

  app.tcp(db.mac, db.ip, { srcPort: 40000, dstPort: 5432 });
  app.arpFor(db.ip);
  member.tcp(db.mac, db.ip, { srcPort: 40000, dstPort: 5432 });
  assert.equal(db.inbox.length, 0, 'an isolated port was reached');
  assert.ok(app.port.counters.drops.policy >= 2);

  network.connect('app', 'db', 5432, true);
  app.arpFor(db.ip);
  assert.equal(db.inbox.splice(0).length, 1, 'ARP between connected peers');
  app.tcp(db.mac, db.ip, { srcPort: 40000, dstPort: 5432 });
  assert.equal(db.segments().length, 1, 'the opened port');
  db.tcp(app.mac, app.ip, { srcPort: 5432, dstPort: 40000, flags: 0x12 });
  assert.equal(app.segments().length, 1, 'the answer');
  app.tcp(db.mac, db.ip, { srcPort: 40001, dstPort: 22 });
  db.tcp(app.mac, app.ip, { srcPort: 40002, dstPort: 5432 });
  member.tcp(db.mac, db.ip, { srcPort: 40000, dstPort: 5432 });
  assert.equal(db.inbox.length + app.inbox.length, 0, 'another port, the other direction, or a third party got through');

  network.connect('app', 'db', 5432, false);
  app.tcp(db.mac, db.ip, { srcPort: 40000, dstPort: 5432 });
  assert.equal(db.inbox.length, 0, 'disconnected');
});

test('gateway TCP: a closed port answers RST, a served port is spliced to its unix socket both ways, hostile segments change nothing', async () => {
  const socketPath = path.join(dir, 'echo.sock');
  const echo = net.createServer((s) => s.pipe(s));
  await new Promise<void>((resolve) => echo.listen(socketPath, resolve));
  try {
    const sw = new NetSwitch(new NetRegistry(path.join(dir, 'b')));
    const g = new Guest(sw, 'gw', 0x525400000011, 'g', { isolated: true, services: (p) => (p === 7 ? socketPath : undefined) });
    const gw = g.port.network.gateway;

    g.tcp(GATEWAY_MAC, gw, { srcPort: 40000, dstPort: 22 });
    const [rst] = g.segments();
    assert.equal(rst!.flags & 0x04, 0x04, 'RST for a port nobody serves');

    g.tcp(GATEWAY_MAC, gw, { srcPort: 40001, dstPort: 7, seq: 5000, mss: 1000 });
    const [synAck] = g.segments();
    assert.equal(synAck!.flags, 0x12);
    assert.equal(synAck!.ack, 5001);
    g.tcp(GATEWAY_MAC, gw, { srcPort: 40001, dstPort: 7, seq: 5001, ack: (synAck!.seq + 1) >>> 0, flags: 0x18, payload: Buffer.from('ping over the gateway') });
    const deadline = Date.now() + 10_000;
    let echoed = '';
    while (!echoed.includes('ping over the gateway') && Date.now() < deadline) {
      await sleep(20);
      echoed += g.segments().map((s) => s.payload.toString()).join('');
    }
    assert.equal(echoed, 'ping over the gateway');

    // Garbage as TCP: counted as malformed or answered, never thrown.
    for (let i = 0; i < 500; i++) {
      const body = Buffer.from(pseudoRandom(20 + (i % 60), i + 7));
      g.port.receive(buildEth(GATEWAY_MAC, g.mac, ETHERTYPE_IPV4, buildIpv4(g.ip, gw, IPPROTO_TCP, body)));
    }
    assert.ok(g.port.counters.drops.malformed > 400);
    g.port.detach();
  } finally {
    echo.close();
  }
});

test('gateway TCP: an ACK that arrives after a resend still counts (nothing it covers is sent again), the stream ends with FIN', async () => {
  const socketPath = path.join(dir, 'talker.sock');
  const talker = net.createServer((s) => s.end(Buffer.alloc(5000, 0x62)));
  await new Promise<void>((resolve) => talker.listen(socketPath, resolve));
  try {
    const sw = new NetSwitch(new NetRegistry(path.join(dir, 'c')));
    const g = new Guest(sw, 'late', 0x525400000021, 'late', { isolated: true, services: (p) => (p === 9 ? socketPath : undefined) });
    const gw = g.port.network.gateway;
    g.tcp(GATEWAY_MAC, gw, { srcPort: 41000, dstPort: 9, seq: 7000, mss: 1000 });
    const [synAck] = g.segments();
    const base = (synAck!.seq + 1) >>> 0;
    g.tcp(GATEWAY_MAC, gw, { srcPort: 41000, dstPort: 9, seq: 7001, ack: base, flags: 0x10 });
    // Do not ACK until the resend timer fired at least once.
    await sleep(700);
    const seen = g.segments();
    const dataEnd = Math.max(...seen.map((s) => (s.seq + s.payload.length) >>> 0));
    assert.equal((dataEnd - base) >>> 0, 5000, 'all data was sent');
    g.tcp(GATEWAY_MAC, gw, { srcPort: 41000, dstPort: 9, seq: 7001, ack: dataEnd, flags: 0x10 });
    const deadline = Date.now() + 10_000;
    let fin: TcpSegment | undefined;
    let resent = 0;
    while (!fin && Date.now() < deadline) {
      await sleep(20);
      const after = g.segments();
      resent += after.filter((s) => s.payload.length > 0).length;
      fin = after.find((s) => (s.flags & 0x01) !== 0);
    }
    assert.equal(resent, 0, 'data the late ACK covered was sent again');
    assert.ok(fin, 'no FIN after the late ACK');
    assert.equal(fin.flags & 0x04, 0, 'reset instead of FIN');
    assert.equal(fin.seq, dataEnd);
    g.tcp(GATEWAY_MAC, gw, { srcPort: 41000, dstPort: 9, seq: 7001, ack: (dataEnd + 1) >>> 0, flags: 0x11 });
    const [last] = g.segments();
    assert.equal(last!.ack, 7002, 'our FIN acknowledged');
    assert.equal(g.port.gatewayTcp!.size, 0, 'the connection is gone');
  } finally {
    talker.close();
  }
});
