/**
 * Ethernet II, ARP, IPv4, UDP and ICMP echo: the few headers the switch and
 * its gateway services read or write. Every parser checks bounds and returns
 * undefined for anything malformed (the caller counts and drops it); no parser
 * throws on hostile input. MAC addresses are 48-bit integers (exact in a JS
 * number) and IPv4 addresses unsigned 32-bit integers, so they key Maps.
 */

export const ETH_HEADER = 14;
/** Largest Ethernet frame accepted: 1500 B payload + header (+4 for an 802.1Q tag). */
export const MAX_FRAME = 1518;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const IPPROTO_ICMP = 1;
export const IPPROTO_UDP = 17;
export const BROADCAST_MAC = 0xffffffffffff;

export function readMac(buf: Uint8Array, offset: number): number {
  // Two reads: bitwise ops are 32-bit in JS, 48-bit values need arithmetic.
  return (buf[offset]! * 2 ** 40) + (buf[offset + 1]! * 2 ** 32) + ((buf[offset + 2]! << 24) >>> 0) + (buf[offset + 3]! << 16) + (buf[offset + 4]! << 8) + buf[offset + 5]!;
}

export function writeMac(buf: Uint8Array, offset: number, mac: number): void {
  const high = Math.floor(mac / 2 ** 32);
  const low = mac >>> 0;
  buf[offset] = (high >>> 8) & 0xff;
  buf[offset + 1] = high & 0xff;
  buf[offset + 2] = low >>> 24;
  buf[offset + 3] = (low >>> 16) & 0xff;
  buf[offset + 4] = (low >>> 8) & 0xff;
  buf[offset + 5] = low & 0xff;
}

/** Group bit (multicast or broadcast): the lowest bit of the first octet. */
export function isGroupMac(mac: number): boolean {
  return Math.floor(mac / 2 ** 40) % 2 === 1;
}

export function formatMac(mac: number): string {
  const bytes = new Uint8Array(6);
  writeMac(bytes, 0, mac);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(':');
}

/** Parses "52:54:00:12:34:56"; undefined if it is not six hex octets. */
export function parseMac(text: string): number | undefined {
  const parts = text.split(':');
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-fA-F]{2}$/.test(p))) return undefined;
  return readMac(Uint8Array.from(parts.map((p) => parseInt(p, 16))), 0);
}

export function formatIp(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}`;
}

export function parseIp(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255)) return undefined;
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export interface EthHeader {
  dst: number;
  src: number;
  type: number;
}

export function parseEth(frame: Uint8Array): EthHeader | undefined {
  if (frame.length < ETH_HEADER) return undefined;
  return { dst: readMac(frame, 0), src: readMac(frame, 6), type: (frame[12]! << 8) | frame[13]! };
}

export function buildEth(dst: number, src: number, type: number, payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(ETH_HEADER + payload.length);
  writeMac(frame, 0, dst);
  writeMac(frame, 6, src);
  frame.writeUInt16BE(type, 12);
  frame.set(payload, ETH_HEADER);
  return frame;
}

/** RFC 1071 Internet checksum over buf[start, end), plus an initial partial sum. */
export function internetChecksum(buf: Uint8Array, start = 0, end = buf.length, initial = 0): number {
  let sum = initial;
  let i = start;
  for (; i + 1 < end; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!;
  if (i < end) sum += buf[i]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

export interface ArpPacket {
  op: number;
  senderMac: number;
  senderIp: number;
  targetMac: number;
  targetIp: number;
}

/** ARP for IPv4 over Ethernet only (htype 1, ptype 0x0800, hlen 6, plen 4). */
export function parseArp(frame: Uint8Array): ArpPacket | undefined {
  const o = ETH_HEADER;
  if (frame.length < o + 28) return undefined;
  const b = Buffer.from(frame.buffer, frame.byteOffset, frame.length);
  if (b.readUInt16BE(o) !== 1 || b.readUInt16BE(o + 2) !== ETHERTYPE_IPV4 || b[o + 4] !== 6 || b[o + 5] !== 4) return undefined;
  return {
    op: b.readUInt16BE(o + 6),
    senderMac: readMac(b, o + 8),
    senderIp: b.readUInt32BE(o + 14),
    targetMac: readMac(b, o + 18),
    targetIp: b.readUInt32BE(o + 24),
  };
}

export function buildArp(arp: ArpPacket): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt16BE(1, 0);
  b.writeUInt16BE(ETHERTYPE_IPV4, 2);
  b[4] = 6;
  b[5] = 4;
  b.writeUInt16BE(arp.op, 6);
  writeMac(b, 8, arp.senderMac);
  b.writeUInt32BE(arp.senderIp >>> 0, 14);
  writeMac(b, 18, arp.targetMac);
  b.writeUInt32BE(arp.targetIp >>> 0, 24);
  return b;
}

export interface Ipv4Packet {
  src: number;
  dst: number;
  proto: number;
  ttl: number;
  /** True when this is a fragment (MF set or offset > 0): services ignore those. */
  fragment: boolean;
  /** The IP payload (a view into the frame, cut to the header's total length). */
  payload: Buffer;
}

export function parseIpv4(frame: Uint8Array): Ipv4Packet | undefined {
  const o = ETH_HEADER;
  if (frame.length < o + 20) return undefined;
  const b = Buffer.from(frame.buffer, frame.byteOffset, frame.length);
  const versionIhl = b[o]!;
  const headerLength = (versionIhl & 0x0f) * 4;
  if (versionIhl >> 4 !== 4 || headerLength < 20) return undefined;
  const totalLength = b.readUInt16BE(o + 2);
  if (totalLength < headerLength || o + totalLength > b.length) return undefined;
  if (internetChecksum(b, o, o + headerLength) !== 0) return undefined;
  const flagsOffset = b.readUInt16BE(o + 6);
  return {
    src: b.readUInt32BE(o + 12),
    dst: b.readUInt32BE(o + 16),
    proto: b[o + 9]!,
    ttl: b[o + 8]!,
    fragment: (flagsOffset & 0x2000) !== 0 || (flagsOffset & 0x1fff) !== 0,
    payload: b.subarray(o + headerLength, o + totalLength),
  };
}

export function buildIpv4(src: number, dst: number, proto: number, payload: Uint8Array, ttl = 64): Buffer {
  const b = Buffer.alloc(20 + payload.length);
  b[0] = 0x45;
  b.writeUInt16BE(b.length, 2);
  b.writeUInt16BE(0x4000, 6); // don't fragment
  b[8] = ttl;
  b[9] = proto;
  b.writeUInt32BE(src >>> 0, 12);
  b.writeUInt32BE(dst >>> 0, 16);
  b.writeUInt16BE(internetChecksum(b, 0, 20), 10);
  b.set(payload, 20);
  return b;
}

export interface UdpDatagram {
  srcPort: number;
  dstPort: number;
  payload: Buffer;
}

export function parseUdp(ip: Ipv4Packet): UdpDatagram | undefined {
  const b = ip.payload;
  if (ip.proto !== IPPROTO_UDP || ip.fragment || b.length < 8) return undefined;
  const length = b.readUInt16BE(4);
  if (length < 8 || length > b.length) return undefined;
  return { srcPort: b.readUInt16BE(0), dstPort: b.readUInt16BE(2), payload: b.subarray(8, length) };
}

export function buildUdp(src: number, dst: number, srcPort: number, dstPort: number, payload: Uint8Array): Buffer {
  const b = Buffer.alloc(8 + payload.length);
  b.writeUInt16BE(srcPort, 0);
  b.writeUInt16BE(dstPort, 2);
  b.writeUInt16BE(b.length, 4);
  b.set(payload, 8);
  // Pseudo header: src, dst, zero+proto, UDP length.
  const pseudo = (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + IPPROTO_UDP + b.length;
  const sum = internetChecksum(b, 0, b.length, pseudo);
  b.writeUInt16BE(sum === 0 ? 0xffff : sum, 6);
  return b;
}

/** An ICMP echo reply for an echo request payload, or undefined if it is not a valid request. */
export function icmpEchoReply(ip: Ipv4Packet): Buffer | undefined {
  const b = ip.payload;
  if (ip.proto !== IPPROTO_ICMP || ip.fragment || b.length < 8 || b[0] !== 8 || b[1] !== 0) return undefined;
  if (internetChecksum(b) !== 0) return undefined;
  const reply = Buffer.from(b);
  reply[0] = 0;
  reply.writeUInt16BE(0, 2);
  reply.writeUInt16BE(internetChecksum(reply), 2);
  return reply;
}
