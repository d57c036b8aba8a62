/**
 * The overlay switch: one L2 segment per network, ports bound to the MAC and
 * the leased IPv4 address of the guest behind them, and the network's own
 * services (ARP and ping for the gateway, DHCP, DNS) answered in-process.
 *
 * Why the switch checks sources: a guest is untrusted code. A port may only
 * send from its own MAC and its own address; everything else is dropped and
 * counted, never forwarded. Guests restored from one memory snapshot share a
 * MAC: the second one on a network gets its own MAC on the wire, translated
 * back at its port (Ethernet header and ARP body), so both get addresses.
 */
import { randomBytes } from 'node:crypto';
import { HostmeError } from '../errors.js';
import { buildDhcpReply, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DhcpType, parseDhcp } from './dhcp.js';
import { buildDnsReply, DNS_PORT, DnsRcode, parseDnsQuery } from './dns.js';
import {
  BROADCAST_MAC,
  formatIp,
  formatMac,
  buildArp,
  buildEth,
  buildIpv4,
  buildUdp,
  ETH_HEADER,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  icmpEchoReply,
  IPPROTO_ICMP,
  IPPROTO_UDP,
  isGroupMac,
  MAX_FRAME,
  parseArp,
  parseEth,
  parseIp,
  parseIpv4,
  parseUdp,
  readMac,
  writeMac,
  type Ipv4Packet,
} from './frame.js';
import { GatewayTcp, IPPROTO_TCP, buildTcp, parseTcp, type GatewayServices } from './gateway-tcp.js';
import { gatewayOf, maskOf, type Lease, type NetRegistry, type Subnet } from './registry.js';

export type PortKind = 'qemu' | 'websocket' | 'trunk' | 'local';
export type DropReason = 'malformed' | 'oversize' | 'spoofed' | 'rate' | 'broadcast' | 'unsupported' | 'unknown-destination' | 'policy' | 'bandwidth';

export interface PortCounters {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  drops: Record<DropReason, number>;
}

export interface SwitchLimits {
  /** Frames per second a port may send (token bucket), and the burst. */
  framesPerSecond: number;
  frameBurst: number;
  /** Broadcast/multicast frames per second a port may send, and the burst. */
  broadcastsPerSecond: number;
  broadcastBurst: number;
}

export const DEFAULT_LIMITS: SwitchLimits = { framesPerSecond: 200_000, frameBurst: 20_000, broadcastsPerSecond: 200, broadcastBurst: 400 };
const LEASE_SECONDS = 86_400;
/** The gateway's MAC: locally administered, "hm" in it. */
const GATEWAY_MAC = readMac(Uint8Array.from([0x02, 0x68, 0x6d, 0x00, 0x00, 0x01]), 0);

class TokenBucket {
  private tokens: number;
  private last = performance.now();
  constructor(
    private readonly rate: number,
    private readonly burst: number,
  ) {
    this.tokens = burst;
  }
  take(cost = 1): boolean {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
    this.last = now;
    if (this.tokens < cost) return false;
    this.tokens -= cost;
    return true;
  }
}

export interface AttachOptions {
  kind: PortKind;
  /** Instance name: the lease key and DNS name. Without it the guest's MAC names it. */
  instance?: string;
  site?: string;
  /** Delivers one Ethernet frame to the guest (or peer switch). */
  send: (frame: Buffer) => void;
  /**
   * The port's grants at the switch (src/grants): caretakers reached over TCP
   * at the gateway address, and isolation (not a member of the network: the
   * port reaches the gateway only, and no other port reaches it).
   */
  gateway?: { services?: GatewayServices; isolated?: boolean };
}

export class SwitchPort {
  readonly counters: PortCounters = {
    rxFrames: 0,
    rxBytes: 0,
    txFrames: 0,
    txBytes: 0,
    drops: { malformed: 0, oversize: 0, spoofed: 0, rate: 0, broadcast: 0, unsupported: 0, 'unknown-destination': 0, policy: 0, bandwidth: 0 },
  };
  /** TCP to the gateway's caretakers (created at the first segment). */
  gatewayTcp?: GatewayTcp;
  /** The MAC the guest itself uses (bound at its first frame). */
  guestMac?: number;
  /** Its MAC on the network: guestMac unless that was taken (then translated). */
  netMac?: number;
  ip?: number;
  host?: string;
  closed = false;
  readonly frames: TokenBucket;
  readonly broadcasts: TokenBucket;
  /** The bandwidth grant (Mbit/s each way), undefined = unlimited. */
  bandwidthMbit?: number;
  /** Byte buckets policing frames from and to the guest (a frame over the rate is dropped; TCP backs off). */
  private fromGuest?: TokenBucket;
  private toGuest?: TokenBucket;

  constructor(
    readonly id: number,
    readonly network: Network,
    readonly options: AttachOptions,
    limits: SwitchLimits,
  ) {
    this.frames = new TokenBucket(limits.framesPerSecond, limits.frameBurst);
    this.broadcasts = new TokenBucket(limits.broadcastsPerSecond, limits.broadcastBurst);
  }

  get kind(): PortKind {
    return this.options.kind;
  }

  get isolated(): boolean {
    return this.options.gateway?.isolated === true;
  }

  /** Limits the port to `mbit` Mbit/s each way (undefined: unlimited); applies to the next frame. */
  setBandwidth(mbit: number | undefined): void {
    this.bandwidthMbit = mbit;
    if (mbit === undefined) {
      this.fromGuest = this.toGuest = undefined;
      return;
    }
    const bytesPerSec = (mbit * 1_000_000) / 8;
    // Burst: 50 ms of the rate, at least a few full frames.
    const burst = Math.max(bytesPerSec / 20, 4 * MAX_FRAME);
    this.fromGuest = new TokenBucket(bytesPerSec, burst);
    this.toGuest = new TokenBucket(bytesPerSec, burst);
  }

  /** A frame from the guest. Never throws: bad frames are counted and dropped. */
  receive(frame: Buffer): void {
    if (this.closed) return;
    this.counters.rxFrames++;
    this.counters.rxBytes += frame.length;
    if (this.fromGuest && !this.fromGuest.take(frame.length)) {
      this.counters.drops.bandwidth++;
      return;
    }
    const reason = this.network.ingress(this, frame);
    if (reason) this.counters.drops[reason]++;
  }

  /** A frame to the guest, with its MAC translated back if needed. */
  deliver(frame: Buffer): void {
    if (this.closed) return;
    if (this.toGuest && !this.toGuest.take(frame.length)) {
      this.counters.drops.bandwidth++;
      return;
    }
    let out = frame;
    if (this.guestMac !== undefined && this.netMac !== this.guestMac) out = translate(frame, this.netMac!, this.guestMac, 0, 18);
    this.counters.txFrames++;
    this.counters.txBytes += out.length;
    try {
      this.options.send(out);
    } catch {
      // A dead sink is the port's owner's business (it detaches); the switch keeps going.
    }
  }

  detach(): void {
    if (this.closed) return;
    this.closed = true;
    this.gatewayTcp?.close();
    this.network.remove(this);
  }
}

/**
 * Rewrites MAC `from` to `to` in the Ethernet header field at `ethOffset`
 * (0 dst, 6 src) and, in ARP frames, in the ARP body field at `arpOffset`
 * (8 sender, 18 target). Copies: the frame may be shared by a flood.
 */
function translate(frame: Buffer, from: number, to: number, ethOffset: number, arpOffset: number): Buffer {
  const out = Buffer.from(frame);
  if (readMac(out, ethOffset) === from) writeMac(out, ethOffset, to);
  if (out.length >= ETH_HEADER + 28 && out.readUInt16BE(12) === ETHERTYPE_ARP && readMac(out, ETH_HEADER + arpOffset) === from) writeMac(out, ETH_HEADER + arpOffset, to);
  return out;
}

/**
 * Where leases come from when this network is trunked to a hub: the hub owns
 * them (so addresses are unique across switches); this switch asks and waits.
 */
export interface LeaseAuthority {
  requestLease(instance: string, mac: number, site?: string): void;
}

/** MACs learned behind trunks, at most this many per network (a hostile peer cannot grow it). */
const MAX_LEARNED = 4096;

export class Network {
  readonly ports = new Set<SwitchPort>();
  private readonly macs = new Map<number, SwitchPort>();
  private learned = 0;
  readonly taps = new Set<(frame: Buffer) => void>();
  /** Set while the network is trunked to a hub (src/net/trunk.ts). */
  upstream?: LeaseAuthority;
  /** Called after a lease was made or changed here (the hub tells its trunks). */
  readonly leaseListeners = new Set<() => void>();
  readonly gateway: number;
  readonly mask: number;

  constructor(
    readonly name: string,
    readonly subnet: Subnet,
    private readonly registry: NetRegistry,
  ) {
    this.gateway = gatewayOf(subnet);
    this.mask = maskOf(subnet.prefix);
  }

  get domain(): string {
    return `${this.name}.hostme`;
  }

  add(port: SwitchPort): void {
    this.ports.add(port);
  }

  remove(port: SwitchPort): void {
    this.ports.delete(port);
    if (port.netMac !== undefined && this.macs.get(port.netMac) === port) this.macs.delete(port.netMac);
    if (port.kind === 'trunk') {
      for (const [mac, owner] of this.macs) {
        if (owner === port) {
          this.macs.delete(mac);
          this.learned--;
        }
      }
    }
  }

  /** Remembers that `mac` is behind `trunk` (a local port's MAC is never overridden). */
  private learn(trunk: SwitchPort, mac: number): void {
    const current = this.macs.get(mac);
    if (current === trunk || (current && current.kind !== 'trunk')) return;
    if (!current) {
      if (this.learned >= MAX_LEARNED) return;
      this.learned++;
    }
    this.macs.set(mac, trunk);
  }

  /** The lease key of a port: its instance, or its MAC when it gave none. */
  private instanceOf(port: SwitchPort): string {
    return port.options.instance ?? `mac-${port.guestMac!.toString(16).padStart(12, '0')}`;
  }

  /**
   * Leases decided elsewhere (the hub, for a trunked network): stored here for
   * DNS and restarts, and given to the ports that were waiting for them.
   */
  adoptLeases(leases: Lease[]): void {
    this.registry.adoptLeases(this.name, leases);
    for (const port of this.ports) {
      if (port.kind === 'trunk' || port.guestMac === undefined) continue;
      const lease = leases.find((l) => l.instance === this.instanceOf(port));
      if (lease) {
        port.ip = parseIp(lease.ip);
        port.host = lease.host;
      }
    }
  }

  /** Asks the upstream again for every port still without an address (after a trunk reconnects). */
  requestPendingLeases(): void {
    for (const port of this.ports) {
      if (port.kind !== 'trunk' && port.guestMac !== undefined) this.upstream?.requestLease(this.instanceOf(port), port.netMac!, port.options.site);
    }
  }

  /** Makes (or finds) a lease here, as the authority; tells the listeners. */
  leaseHere(instance: string, mac: number, site?: string): Lease {
    const lease = this.registry.lease(this.name, instance, mac, site);
    for (const listener of this.leaseListeners) listener();
    return lease;
  }

  leases(): Lease[] {
    return this.registry.leases(this.name);
  }

  private tap(frame: Buffer): void {
    for (const tap of this.taps) tap(frame);
  }

  /** Binds a port to the MAC of its first frame, and to its instance's lease. */
  private bind(port: SwitchPort, src: number): void {
    port.guestMac = src;
    let netMac = src;
    while (netMac === GATEWAY_MAC || this.macs.has(netMac)) {
      const bytes = randomBytes(6);
      bytes[0] = (bytes[0]! & 0xfc) | 0x02; // locally administered, unicast
      netMac = readMac(bytes, 0);
    }
    port.netMac = netMac;
    this.macs.set(netMac, port);
    const instance = this.instanceOf(port);
    if (this.upstream) {
      // Trunked: the hub decides. A lease it gave before is used at once.
      const known = this.registry.leases(this.name).find((l) => l.instance === instance);
      if (known) {
        port.ip = parseIp(known.ip);
        port.host = known.host;
      }
      this.upstream.requestLease(instance, netMac, port.options.site);
      return;
    }
    const lease = this.leaseHere(instance, netMac, port.options.site);
    port.ip = parseIp(lease.ip);
    port.host = lease.host;
  }

  ingress(port: SwitchPort, frame: Buffer): DropReason | undefined {
    if (frame.length > MAX_FRAME) return 'oversize';
    const eth = parseEth(frame);
    if (!eth || isGroupMac(eth.src)) return 'malformed';
    if (!port.frames.take()) return 'rate';
    if (port.kind === 'trunk') {
      this.learn(port, eth.src);
      this.tap(frame);
      return this.forward(port, frame, eth.dst);
    }
    if (port.guestMac === undefined) {
      try {
        this.bind(port, eth.src);
      } catch {
        return 'unsupported'; // the pool is full: the guest stays off the network
      }
    } else if (eth.src !== port.guestMac) {
      return 'spoofed';
    }
    let ip: Ipv4Packet | undefined;
    if (eth.type === ETHERTYPE_ARP) {
      const arp = parseArp(frame);
      if (!arp) return 'malformed';
      if (arp.senderMac !== port.guestMac || (arp.senderIp !== 0 && arp.senderIp !== port.ip)) return 'spoofed';
    } else if (eth.type === ETHERTYPE_IPV4) {
      ip = parseIpv4(frame);
      if (!ip) return 'malformed';
      if (ip.src !== port.ip && !(ip.src === 0 && isDhcpToServer(ip))) return 'spoofed';
      // A guest running its own DHCP server would hijack its neighbours.
      if (ip.proto === IPPROTO_UDP && ip.payload.length >= 2 && ip.payload.readUInt16BE(0) === DHCP_SERVER_PORT) return 'spoofed';
    } else {
      return 'unsupported'; // IPv6 and the rest: the overlay is IPv4 only
    }
    const out = port.netMac !== port.guestMac ? translate(frame, eth.src, port.netMac!, 6, 8) : frame;
    this.tap(out);
    if (this.serveGateway(port, eth.dst, out, ip)) return undefined;
    if (port.isolated || this.macs.get(eth.dst)?.isolated) {
      // Not a member (or to one that is not): only what `hostme connect` opened.
      const peer = this.connectedPeer(port, out, ip);
      if (!peer) return 'policy';
      peer.deliver(out);
      return undefined;
    }
    if (isGroupMac(eth.dst) && !port.broadcasts.take()) return 'broadcast';
    return this.forward(port, out, eth.dst);
  }

  /** TCP ports opened between two instances on this network: "A\0B\0PORT" lets A reach B:PORT (and B answer). */
  private readonly connections = new Set<string>();

  /** hostme connect / disconnect: `from` may reach `to` on TCP `port`. */
  connect(from: string, to: string, port: number, on: boolean): void {
    const key = `${from}\0${to}\0${port}`;
    if (on) this.connections.add(key);
    else this.connections.delete(key);
  }

  get connectionList(): Array<{ from: string; to: string; port: number }> {
    return [...this.connections].map((k) => {
      const [from, to, port] = k.split('\0');
      return { from: from!, to: to!, port: Number(port) };
    });
  }

  private connected(a: SwitchPort, b: SwitchPort, port?: number): boolean {
    const ai = a.options.instance;
    const bi = b.options.instance;
    if (ai === undefined || bi === undefined) return false;
    if (port !== undefined) return this.connections.has(`${ai}\0${bi}\0${port}`);
    for (const key of this.connections) if (key.startsWith(`${ai}\0${bi}\0`) || key.startsWith(`${bi}\0${ai}\0`)) return true;
    return false;
  }

  /** The port a frame may reach through a connection: ARP between connected peers, TCP to (or from) the opened port. */
  private connectedPeer(from: SwitchPort, frame: Buffer, ip: Ipv4Packet | undefined): SwitchPort | undefined {
    if (this.connections.size === 0) return undefined;
    const target = ip ? ip.dst : parseArp(frame)?.targetIp;
    let peer: SwitchPort | undefined;
    for (const p of this.ports) if (p !== from && p.kind !== 'trunk' && p.ip === target) peer = p;
    if (!peer) return undefined;
    if (!ip) return this.connected(from, peer) ? peer : undefined;
    if (ip.proto !== IPPROTO_TCP || ip.fragment || ip.payload.length < 4) return undefined;
    const srcPort = ip.payload.readUInt16BE(0);
    const dstPort = ip.payload.readUInt16BE(2);
    return this.connected(from, peer, dstPort) || this.connected(peer, from, srcPort) ? peer : undefined;
  }

  private forward(from: SwitchPort, frame: Buffer, dst: number): DropReason | undefined {
    if (!isGroupMac(dst)) {
      const to = this.macs.get(dst);
      if (to && to !== from) {
        if (to.isolated) return 'policy';
        to.deliver(frame);
        return undefined;
      }
    }
    // Broadcast, multicast, or a MAC behind a trunk: every other port (a unicast only to trunks).
    let delivered = false;
    for (const port of this.ports) {
      if (port === from || port.isolated || (!isGroupMac(dst) && port.kind !== 'trunk')) continue;
      port.deliver(frame);
      delivered = true;
    }
    return delivered || isGroupMac(dst) ? undefined : 'unknown-destination';
  }

  /** Answers ARP, ping, DHCP and DNS for the gateway; true if the frame was for it. */
  private serveGateway(port: SwitchPort, dst: number, frame: Buffer, ip: Ipv4Packet | undefined): boolean {
    if (!ip) {
      const arp = parseArp(frame)!;
      if (arp.op !== 1 || arp.targetIp !== this.gateway) return dst === GATEWAY_MAC;
      this.reply(port, buildEth(port.netMac!, GATEWAY_MAC, ETHERTYPE_ARP, buildArp({ op: 2, senderMac: GATEWAY_MAC, senderIp: this.gateway, targetMac: port.netMac!, targetIp: arp.senderIp })));
      return true;
    }
    if (isDhcpToServer(ip)) {
      this.serveDhcp(port, ip);
      return true;
    }
    if (ip.dst !== this.gateway) return dst === GATEWAY_MAC;
    if (ip.proto === IPPROTO_ICMP) {
      const reply = icmpEchoReply(ip);
      if (reply) this.replyIp(port, IPPROTO_ICMP, reply);
    } else if (ip.proto === IPPROTO_TCP) {
      this.serveTcp(port, ip);
    } else if (ip.proto === IPPROTO_UDP) {
      const udp = parseUdp(ip);
      if (udp?.dstPort === DNS_PORT) {
        const answer = this.answerDns(udp.payload);
        if (answer) this.replyIp(port, IPPROTO_UDP, buildUdp(this.gateway, port.ip!, DNS_PORT, udp.srcPort, answer));
      }
    }
    return true;
  }

  /** TCP to the gateway: the port's caretakers, RST for everything else. */
  private serveTcp(port: SwitchPort, ip: Ipv4Packet): void {
    const seg = parseTcp(ip);
    if (!seg) {
      port.counters.drops.malformed++;
      return;
    }
    const services = port.options.gateway?.services ?? (() => undefined);
    port.gatewayTcp ??= new GatewayTcp(services, (out) => {
      if (port.ip !== undefined) this.replyIp(port, IPPROTO_TCP, buildTcp(this.gateway, port.ip, out));
    });
    port.gatewayTcp.segment(seg);
  }

  private reply(port: SwitchPort, frame: Buffer): void {
    this.tap(frame);
    port.deliver(frame);
  }

  private replyIp(port: SwitchPort, proto: number, payload: Buffer): void {
    this.reply(port, buildEth(port.netMac!, GATEWAY_MAC, ETHERTYPE_IPV4, buildIpv4(this.gateway, port.ip!, proto, payload)));
  }

  private serveDhcp(port: SwitchPort, ip: Ipv4Packet): void {
    if (port.ip === undefined) return; // waiting for the hub's lease: the client asks again
    const udp = parseUdp(ip);
    const request = udp && parseDhcp(udp.payload);
    if (!request) {
      port.counters.drops.malformed++;
      return;
    }
    let type: number;
    if (request.type === DhcpType.DISCOVER) type = DhcpType.OFFER;
    else if (request.type === DhcpType.REQUEST) {
      // Another server was chosen: not ours to answer (there is none, but be correct).
      if (request.serverId !== undefined && request.serverId !== this.gateway) return;
      const asked = request.requestedIp ?? request.ciaddr;
      type = asked === port.ip ? DhcpType.ACK : DhcpType.NAK;
    } else if (request.type === DhcpType.INFORM) type = DhcpType.ACK;
    else return; // RELEASE, DECLINE: the address stays the instance's for good
    const payload = buildDhcpReply({
      type,
      request,
      yiaddr: request.type === DhcpType.INFORM ? 0 : port.ip!,
      serverIp: this.gateway,
      subnetMask: this.mask,
      router: this.gateway,
      dns: this.gateway,
      hostName: port.host,
      domain: this.domain,
      leaseSeconds: LEASE_SECONDS,
    });
    // To the broadcast address: the client has no address yet (RFC 2131 4.1 allows it).
    const dstIp = request.type === DhcpType.INFORM ? ip.src : 0xffffffff;
    const dstMac = request.type === DhcpType.INFORM ? port.netMac! : BROADCAST_MAC;
    this.reply(port, buildEth(dstMac, GATEWAY_MAC, ETHERTYPE_IPV4, buildIpv4(this.gateway, dstIp, IPPROTO_UDP, buildUdp(this.gateway, dstIp, DHCP_SERVER_PORT, DHCP_CLIENT_PORT, payload))));
  }

  /** Names: HOST.NETWORK.hostme (one lease) and SITE.NETWORK.hostme (every lease of that site). */
  answerDns(payload: Buffer): Buffer | undefined {
    const query = parseDnsQuery(payload);
    if (!query) return undefined;
    const suffix = `.${this.domain}`;
    if (!query.name.endsWith(suffix)) return buildDnsReply(query, DnsRcode.REFUSED);
    const label = query.name.slice(0, -suffix.length);
    if (label === 'gateway') return buildDnsReply(query, DnsRcode.NOERROR, [this.gateway]);
    const leases = this.registry.leases(this.name);
    const byHost = leases.filter((l) => l.host === label);
    const matches = byHost.length ? byHost : leases.filter((l) => l.site === label);
    if (!matches.length) return buildDnsReply(query, DnsRcode.NXDOMAIN);
    return buildDnsReply(query, DnsRcode.NOERROR, matches.map((l) => parseIp(l.ip)!));
  }
}

function isDhcpToServer(ip: Ipv4Packet): boolean {
  if (ip.proto !== IPPROTO_UDP || ip.payload.length < 4) return false;
  return ip.payload.readUInt16BE(0) === DHCP_CLIENT_PORT && ip.payload.readUInt16BE(2) === DHCP_SERVER_PORT;
}

export interface PortInfo {
  id: number;
  kind: PortKind;
  instance?: string;
  host?: string;
  mac?: string;
  ip?: string;
  /** The bandwidth grant, Mbit/s each way (absent: unlimited). */
  bandwidthMbit?: number;
  counters: PortCounters;
}

export class NetSwitch {
  private readonly networks = new Map<string, Network>();
  private nextPortId = 1;

  constructor(
    readonly registry: NetRegistry,
    private readonly limits: SwitchLimits = DEFAULT_LIMITS,
  ) {}

  network(name: string, subnet?: string): Network {
    let network = this.networks.get(name);
    if (!network) {
      network = new Network(name, this.registry.ensure(name, subnet), this.registry);
      this.networks.set(name, network);
    }
    return network;
  }

  attach(networkName: string, options: AttachOptions): SwitchPort {
    const network = this.network(networkName);
    if (options.kind !== 'trunk' && options.instance !== undefined && [...network.ports].some((p) => p.options.instance === options.instance)) {
      throw new HostmeError('net-instance-busy', `instance ${options.instance} is already on network ${networkName}; use --instance NAME for a second copy`, { network: networkName });
    }
    const port = new SwitchPort(this.nextPortId++, network, options, this.limits);
    network.add(port);
    return port;
  }

  /** The network on which both instances have a port (hostme connect). */
  networkOf(a: string, b: string): Network | undefined {
    for (const network of this.networks.values()) {
      const names = [...network.ports].map((p) => p.options.instance);
      if (names.includes(a) && names.includes(b)) return network;
    }
    return undefined;
  }

  /** Sets the bandwidth grant of every port of `instance` (hostme grant NAME bandwidth); the number of ports changed. */
  setBandwidth(instance: string, mbit: number | undefined): number {
    let changed = 0;
    for (const network of this.networks.values()) {
      for (const port of network.ports) {
        if (port.kind === 'trunk' || port.options.instance !== instance) continue;
        port.setBandwidth(mbit);
        changed++;
      }
    }
    return changed;
  }

  activeNetworks(): Network[] {
    return [...this.networks.values()];
  }

  ports(networkName: string): PortInfo[] {
    const network = this.networks.get(networkName);
    return [...(network?.ports ?? [])].map((p) => ({
      id: p.id,
      kind: p.kind,
      instance: p.options.instance,
      host: p.host,
      mac: p.netMac === undefined ? undefined : formatMac(p.netMac),
      ip: p.ip === undefined ? undefined : formatIp(p.ip),
      ...(p.bandwidthMbit !== undefined ? { bandwidthMbit: p.bandwidthMbit } : {}),
      counters: p.counters,
    }));
  }
}
