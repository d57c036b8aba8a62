import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { parseDhcp } from './dhcp.js';
import { parseDnsQuery } from './dns.js';
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
  parseMac,
  parseUdp,
  readMac,
  writeMac,
} from './frame.js';
import { NetRegistry } from './registry.js';
import { NetSwitch, type SwitchPort } from './switch.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'hostme-net-'));
  dirs.push(dir);
  return dir;
}

/** A guest stand-in: a port plus the frames it received. */
class FakeGuest {
  readonly inbox: Buffer[] = [];
  readonly port: SwitchPort;
  ip = 0;
  constructor(
    sw: NetSwitch,
    network: string,
    readonly mac: number,
    instance?: string,
  ) {
    this.port = sw.attach(network, { kind: 'local', instance, send: (f) => this.inbox.push(f) });
  }
  send(frame: Buffer): void {
    this.port.receive(frame);
  }
  take(): Buffer[] {
    return this.inbox.splice(0);
  }
  dhcp(type: number, requested?: number): ReturnType<typeof parseDhcp> & { yiaddr: number } {
    this.send(dhcpFrame(this.mac, type, requested));
    const replies = this.take().map(parseReplyDhcp).filter((r) => r !== undefined);
    assert.equal(replies.length, 1, 'one DHCP reply');
    return replies[0]!;
  }
  lease(): number {
    const offer = this.dhcp(1);
    assert.equal(offer.type, 2, 'OFFER');
    const ack = this.dhcp(3, offer.yiaddr);
    assert.equal(ack.type, 5, 'ACK');
    this.ip = ack.yiaddr;
    return ack.yiaddr;
  }
  udp(dstMac: number, dst: number, dstPort: number, payload: Buffer, src = this.ip): Buffer {
    return buildEth(dstMac, this.mac, ETHERTYPE_IPV4, buildIpv4(src, dst, IPPROTO_UDP, buildUdp(src, dst, 40000, dstPort, payload)));
  }
}

/** A switch with guests alpha (MAC_A) and beta (MAC_B) on network demo, both leased, beta's inbox empty. */
function twoLeasedGuests(): { sw: NetSwitch; a: FakeGuest; b: FakeGuest } {
  const sw = new NetSwitch(new NetRegistry(tempDir()));
  const a = new FakeGuest(sw, 'demo', MAC_A, 'alpha');
  const b = new FakeGuest(sw, 'demo', MAC_B, 'beta');
  a.lease();
  b.lease();
  b.take();
  return { sw, a, b };
}

function dhcpFrame(mac: number, type: number, requested?: number): Buffer {
  const b = Buffer.alloc(300);
  b[0] = 1;
  b[1] = 1;
  b[2] = 6;
  b.writeUInt32BE(0x1234abcd, 4);
  writeMac(b, 28, mac);
  b.writeUInt32BE(0x63825363, 236);
  let i = 240;
  b.set([53, 1, type], i);
  i += 3;
  if (requested !== undefined) {
    b.set([50, 4], i);
    b.writeUInt32BE(requested, i + 2);
    i += 6;
  }
  b[i] = 255;
  return buildEth(BROADCAST_MAC, mac, ETHERTYPE_IPV4, buildIpv4(0, 0xffffffff, IPPROTO_UDP, buildUdp(0, 0xffffffff, 68, 67, b)));
}

/** Reads a server reply (BOOTREPLY) by flipping op so the request parser accepts it. */
function parseReplyDhcp(frame: Buffer) {
  const ip = parseIpv4(frame);
  const udp = ip && parseUdp(ip);
  if (!udp || udp.dstPort !== 68) return undefined;
  const copy = Buffer.from(udp.payload);
  copy[0] = 1;
  const parsed = parseDhcp(copy);
  return parsed && { ...parsed, yiaddr: udp.payload.readUInt32BE(16) };
}

function dnsQuery(name: string, type = 1): Buffer {
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const header = Buffer.alloc(12);
  header.writeUInt16BE(0x4242, 0);
  header.writeUInt16BE(0x0100, 2);
  header.writeUInt16BE(1, 4);
  const tail = Buffer.alloc(5);
  tail.writeUInt16BE(type, 1);
  tail.writeUInt16BE(1, 3);
  return Buffer.concat([header, ...labels, tail]);
}

function dnsAnswer(frame: Buffer): { rcode: number; addresses: string[] } {
  const udp = parseUdp(parseIpv4(frame)!)!;
  const b = udp.payload;
  const count = b.readUInt16BE(6);
  const addresses: string[] = [];
  let i = b.length - count * 16;
  for (let n = 0; n < count; n++, i += 16) addresses.push(formatIp(b.readUInt32BE(i + 12)));
  return { rcode: b.readUInt16BE(2) & 0xf, addresses };
}

const MAC_A = parseMac('52:54:00:00:00:0a')!;
const MAC_B = parseMac('52:54:00:00:00:0b')!;

describe('frame helpers', () => {
  it('round-trips MACs and addresses', () => {
    const b = Buffer.alloc(6);
    writeMac(b, 0, 0xfedcba987654);
    assert.equal(readMac(b, 0), 0xfedcba987654);
    assert.equal(parseIp('100.64.3.1'), 0x64400301);
    assert.equal(formatIp(0x64400301), '100.64.3.1');
    assert.equal(parseIp('1.2.3.256'), undefined);
    assert.equal(parseMac('52:54:00:00:00'), undefined);
  });
  it('builds IPv4 headers with a valid checksum', () => {
    const ip = buildIpv4(1, 2, IPPROTO_ICMP, Buffer.alloc(8));
    assert.equal(internetChecksum(ip, 0, 20), 0);
  });
});

describe('switch services', () => {
  it('hands out distinct, stable addresses by DHCP and keeps them across a restart', () => {
    const dir = tempDir();
    const sw = new NetSwitch(new NetRegistry(dir));
    const a = new FakeGuest(sw, 'demo', MAC_A, 'alpha');
    const b = new FakeGuest(sw, 'demo', MAC_B, 'beta');
    const ipA = a.lease();
    const ipB = b.lease();
    assert.notEqual(ipA, ipB);
    const subnet = sw.registry.subnet('demo');
    assert.equal((ipA & 0xffffff00) >>> 0, subnet.base);
    assert.ok(formatIp(subnet.base).startsWith('100.'));
    const restarted = new NetSwitch(new NetRegistry(dir));
    const b2 = new FakeGuest(restarted, 'demo', MAC_B, 'beta');
    assert.equal(b2.lease(), ipB);
    const a2 = new FakeGuest(restarted, 'demo', parseMac('52:54:00:00:00:99')!, 'alpha');
    assert.equal(a2.lease(), ipA, 'the address follows the instance, not the MAC');
  });

  it('NAKs a request for somebody else address', () => {
    const sw = new NetSwitch(new NetRegistry(tempDir()));
    const a = new FakeGuest(sw, 'demo', MAC_A, 'alpha');
    const ip = a.lease();
    const nak = a.dhcp(3, (ip + 5) >>> 0);
    assert.equal(nak.type, 6);
  });

  it('answers ARP and ping for the gateway and forwards between guests', () => {
    const sw = new NetSwitch(new NetRegistry(tempDir()));
    const a = new FakeGuest(sw, 'demo', MAC_A, 'alpha');
    const b = new FakeGuest(sw, 'demo', MAC_B, 'beta');
    a.lease();
    b.lease();
    const gateway = (a.ip & 0xffffff00) + 1;
    a.send(buildEth(BROADCAST_MAC, MAC_A, ETHERTYPE_ARP, buildArp({ op: 1, senderMac: MAC_A, senderIp: a.ip, targetMac: 0, targetIp: gateway })));
    const [arpReply] = a.take();
    const arp = parseArp(arpReply!)!;
    assert.equal(arp.op, 2);
    assert.equal(arp.senderIp, gateway);
    const echo = Buffer.from([8, 0, 0, 0, 0, 1, 0, 1, 0x61, 0x62]);
    echo.writeUInt16BE(internetChecksum(echo), 2);
    a.send(buildEth(arp.senderMac, MAC_A, ETHERTYPE_IPV4, buildIpv4(a.ip, gateway, IPPROTO_ICMP, echo)));
    const [pong] = a.take();
    const pongIp = parseIpv4(pong!)!;
    assert.equal(pongIp.payload[0], 0);
    assert.equal(internetChecksum(pongIp.payload), 0);
    // Broadcast ARP between guests floods; the unicast reply goes straight back.
    b.take();
    a.send(buildEth(BROADCAST_MAC, MAC_A, ETHERTYPE_ARP, buildArp({ op: 1, senderMac: MAC_A, senderIp: a.ip, targetMac: 0, targetIp: b.ip })));
    assert.equal(b.take().length, 1);
    b.send(buildEth(MAC_A, MAC_B, ETHERTYPE_ARP, buildArp({ op: 2, senderMac: MAC_B, senderIp: b.ip, targetMac: MAC_A, targetIp: a.ip })));
    assert.equal(parseArp(a.take()[0]!)!.senderIp, b.ip);
  });

  it('resolves INSTANCE.NETWORK.hostme and SITE.NETWORK.hostme, refuses other names', () => {
    const sw = new NetSwitch(new NetRegistry(tempDir()));
    const a = new FakeGuest(sw, 'demo', MAC_A, 'web');
    const b = sw.attach('demo', { kind: 'local', instance: 'web-2', site: 'shop', send: () => {} });
    const c = sw.attach('demo', { kind: 'local', instance: 'web-3', site: 'shop', send: () => {} });
    a.lease();
    b.receive(dhcpFrame(MAC_B, 1));
    c.receive(dhcpFrame(parseMac('52:54:00:00:00:0c')!, 1));
    const gateway = (a.ip & 0xffffff00) + 1;
    const ask = (name: string, type = 1) => {
      a.send(a.udp(0x02686d000001, gateway, 53, dnsQuery(name, type)));
      return dnsAnswer(a.take()[0]!);
    };
    assert.deepEqual(ask('web.demo.hostme'), { rcode: 0, addresses: [formatIp(a.ip)] });
    assert.deepEqual(ask('WEB.Demo.hostme'), { rcode: 0, addresses: [formatIp(a.ip)] });
    assert.deepEqual(ask('shop.demo.hostme').addresses.length, 2);
    assert.deepEqual(ask('web.demo.hostme', 28), { rcode: 0, addresses: [] });
    assert.equal(ask('nobody.demo.hostme').rcode, 3);
    assert.equal(ask('example.com').rcode, 5);
  });
});

describe('switch isolation', () => {
  it('drops and counts spoofed MACs and addresses, and rogue DHCP servers', () => {
    const { a, b } = twoLeasedGuests();
    a.send(a.udp(MAC_B, b.ip, 9, Buffer.from('spoof'), b.ip)); // someone else's IP
    a.send(buildEth(MAC_B, parseMac('52:54:00:00:00:77')!, ETHERTYPE_IPV4, buildIpv4(a.ip, b.ip, IPPROTO_UDP, buildUdp(a.ip, b.ip, 1, 9, Buffer.alloc(4))))); // another MAC
    a.send(buildEth(BROADCAST_MAC, MAC_A, ETHERTYPE_ARP, buildArp({ op: 2, senderMac: MAC_A, senderIp: b.ip, targetMac: 0, targetIp: b.ip }))); // ARP poisoning
    const rogue = buildEth(BROADCAST_MAC, MAC_A, ETHERTYPE_IPV4, buildIpv4(a.ip, 0xffffffff, IPPROTO_UDP, buildUdp(a.ip, 0xffffffff, 67, 68, Buffer.alloc(300))));
    a.send(rogue);
    assert.equal(b.take().length, 0);
    assert.equal(a.port.counters.drops.spoofed, 4);
    a.send(a.udp(MAC_B, b.ip, 9, Buffer.from('hello')));
    assert.equal(b.take().length, 1);
  });

  it('keeps networks apart', () => {
    const sw = new NetSwitch(new NetRegistry(tempDir()));
    const a = new FakeGuest(sw, 'red', MAC_A, 'alpha');
    const b = new FakeGuest(sw, 'blue', MAC_B, 'beta');
    a.lease();
    b.lease();
    assert.notEqual(a.ip & 0xffffff00, b.ip & 0xffffff00, 'different subnets');
    b.take();
    a.send(buildEth(BROADCAST_MAC, MAC_A, ETHERTYPE_ARP, buildArp({ op: 1, senderMac: MAC_A, senderIp: a.ip, targetMac: 0, targetIp: b.ip })));
    a.send(a.udp(MAC_B, b.ip, 9, Buffer.from('x')));
    assert.equal(b.take().length, 0);
  });

  it('refuses overlapping subnets', () => {
    const registry = new NetRegistry(tempDir());
    registry.ensure('one', '10.20.0.0/16');
    assert.throws(() => registry.ensure('two', '10.20.30.0/24'), { code: 'net-subnet-overlap' });
    assert.throws(() => registry.ensure('three', '10.20.30.1/24'), { code: 'usage' });
  });

  it('gives clones that share a MAC their own MAC and address', () => {
    const sw = new NetSwitch(new NetRegistry(tempDir()));
    const a = new FakeGuest(sw, 'demo', MAC_A, 'clone-1');
    const b = new FakeGuest(sw, 'demo', MAC_A, 'clone-2');
    a.lease();
    b.lease();
    assert.notEqual(a.ip, b.ip);
    assert.notEqual(a.port.netMac, b.port.netMac);
    // b's ARP request reaches a with b's network MAC; a's reply reaches b addressed to b's own MAC.
    a.take();
    b.send(buildEth(BROADCAST_MAC, MAC_A, ETHERTYPE_ARP, buildArp({ op: 1, senderMac: MAC_A, senderIp: b.ip, targetMac: 0, targetIp: a.ip })));
    const request = parseArp(a.take()[0]!)!;
    assert.equal(request.senderMac, b.port.netMac);
    a.send(buildEth(request.senderMac, MAC_A, ETHERTYPE_ARP, buildArp({ op: 2, senderMac: MAC_A, senderIp: a.ip, targetMac: request.senderMac, targetIp: b.ip })));
    const reply = b.take()[0]!;
    assert.equal(parseEth(reply)!.dst, MAC_A);
    assert.equal(parseArp(reply)!.targetMac, MAC_A);
  });

  it('limits broadcast floods per port', () => {
    const sw = new NetSwitch(new NetRegistry(tempDir()), { framesPerSecond: 1e6, frameBurst: 1e6, broadcastsPerSecond: 10, broadcastBurst: 20 });
    const a = new FakeGuest(sw, 'demo', MAC_A, 'alpha');
    const b = new FakeGuest(sw, 'demo', MAC_B, 'beta');
    a.lease();
    b.take();
    const storm = buildEth(BROADCAST_MAC, MAC_A, ETHERTYPE_ARP, buildArp({ op: 1, senderMac: MAC_A, senderIp: a.ip, targetMac: 0, targetIp: a.ip + 50 }));
    for (let i = 0; i < 1000; i++) a.send(storm);
    const passed = b.take().length;
    assert.ok(passed >= 20 && passed < 100, `passed ${passed}`);
    assert.equal(a.port.counters.drops.broadcast, 1000 - passed);
  });
});

describe('switch under hostile input (bounded fuzz)', () => {
  it('counts and drops malformed, truncated and oversize frames, and keeps serving', () => {
    const sw = new NetSwitch(new NetRegistry(tempDir()));
    const a = new FakeGuest(sw, 'demo', MAC_A, 'alpha');
    const b = new FakeGuest(sw, 'demo', MAC_B, 'beta');
    a.lease();
    b.lease();
    const gateway = (a.ip & 0xffffff00) + 1;
    const seeds = [
      dhcpFrame(MAC_A, 1),
      dhcpFrame(MAC_A, 3, a.ip),
      a.udp(0x02686d000001, gateway, 53, dnsQuery('beta.demo.hostme')),
      buildEth(BROADCAST_MAC, MAC_A, ETHERTYPE_ARP, buildArp({ op: 1, senderMac: MAC_A, senderIp: a.ip, targetMac: 0, targetIp: gateway })),
    ];
    a.send(Buffer.alloc(3));
    a.send(Buffer.alloc(9000));
    const deadline = Date.now() + 5000;
    let sent = 0;
    for (let round = 0; round < 20000 && Date.now() < deadline; round++) {
      const seed = seeds[round % seeds.length]!;
      const frame = Buffer.from(seed);
      // Flip a few random bytes after the source MAC, and sometimes truncate.
      const flips = 1 + (round % 4);
      const noise = randomBytes(flips * 3);
      for (let i = 0; i < flips; i++) frame[12 + (noise.readUInt16BE(i * 3) % (frame.length - 12))] = noise[i * 3 + 2]!;
      const cut = round % 3 === 0 ? frame.subarray(0, noise.readUInt16BE(0) % frame.length) : frame;
      a.send(cut);
      sent++;
      // Parsers alone, on pure noise.
      const junk = randomBytes(round % 600);
      parseDhcp(junk);
      parseDnsQuery(junk);
      parseArp(junk);
      parseIpv4(junk);
    }
    assert.ok(sent > 1000);
    const drops = a.port.counters.drops;
    assert.ok(drops.malformed > 0 && drops.oversize === 1, JSON.stringify(drops));
    // Still serving: the lease is unchanged and DNS answers.
    a.take();
    b.take();
    assert.equal(a.dhcp(3, a.ip).type, 5);
    a.send(a.udp(0x02686d000001, gateway, 53, dnsQuery('beta.demo.hostme')));
    assert.deepEqual(dnsAnswer(a.take()[0]!).addresses, [formatIp(b.ip)]);
  });
});

describe('switch bandwidth grant', () => {
  it('polices a port to its Mbit/s each way and counts the drops; lifted, every frame passes', () => {
    const { sw, a, b } = twoLeasedGuests();
    assert.equal(sw.setBandwidth('alpha', 1), 1);
    assert.equal(a.port.bandwidthMbit, 1);
    // 1000 frames of ~1.4 KB (1.4 MB) in one burst: at 1 Mbit/s (125 KB/s, burst 6 KB) passing them all would take over 10 s.
    const big = Buffer.alloc(1400);
    for (let i = 0; i < 1000; i++) a.send(a.udp(MAC_B, b.ip, 9, big));
    const passed = b.take().length;
    assert.ok(passed > 0 && passed < 1000, `${passed} of 1000 frames passed`);
    assert.equal(a.port.counters.drops.bandwidth, 1000 - passed);
    // To the guest: the same limit.
    for (let i = 0; i < 1000; i++) b.send(b.udp(MAC_A, a.ip, 9, big));
    const received = a.take().length;
    assert.ok(received > 0 && received < 1000, `${received} of 1000 frames reached the limited guest`);
    assert.equal(sw.setBandwidth('alpha', undefined), 1);
    for (let i = 0; i < 1000; i++) a.send(a.udp(MAC_B, b.ip, 9, big));
    assert.equal(b.take().length, 1000);
    assert.equal(sw.setBandwidth('nobody', 1), 0);
  });
});
