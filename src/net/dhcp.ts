/**
 * The DHCPv4 subset (RFC 2131/2132) the switch's gateway answers: parse a
 * client's BOOTREQUEST, build OFFER/ACK/NAK. Options sent: 1 subnet mask,
 * 3 router, 6 DNS server, 12 host name, 15 domain name, 51 lease time,
 * 53 message type, 54 server identifier.
 */
import { readMac, writeMac } from './frame.js';

export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;
const FIXED = 236;
const COOKIE = 0x63825363;

export const DhcpType = { DISCOVER: 1, OFFER: 2, REQUEST: 3, DECLINE: 4, ACK: 5, NAK: 6, RELEASE: 7, INFORM: 8 } as const;

export interface DhcpRequest {
  type: number;
  xid: number;
  flags: number;
  ciaddr: number;
  /** Client hardware address (as the client wrote it). */
  chaddr: number;
  requestedIp?: number;
  serverId?: number;
  hostName?: string;
}

/** Parses a BOOTREQUEST with a DHCP message type; undefined for anything else. */
export function parseDhcp(b: Buffer): DhcpRequest | undefined {
  if (b.length < FIXED + 4 || b[0] !== 1 || b[1] !== 1 || b[2] !== 6) return undefined;
  if (b.readUInt32BE(FIXED) !== COOKIE) return undefined;
  const request: Partial<DhcpRequest> = {
    xid: b.readUInt32BE(4),
    flags: b.readUInt16BE(10),
    ciaddr: b.readUInt32BE(12),
    chaddr: readMac(b, 28),
  };
  let i = FIXED + 4;
  while (i < b.length) {
    const code = b[i]!;
    if (code === 255) break;
    if (code === 0) {
      i++;
      continue;
    }
    if (i + 1 >= b.length) return undefined;
    const length = b[i + 1]!;
    const start = i + 2;
    if (start + length > b.length) return undefined;
    const value = b.subarray(start, start + length);
    if (code === 53 && length === 1) request.type = value[0]!;
    else if (code === 50 && length === 4) request.requestedIp = value.readUInt32BE(0);
    else if (code === 54 && length === 4) request.serverId = value.readUInt32BE(0);
    else if (code === 12 && length > 0) request.hostName = value.toString('latin1');
    i = start + length;
  }
  if (request.type === undefined || request.type < 1 || request.type > 8) return undefined;
  return request as DhcpRequest;
}

export interface DhcpReplyParams {
  type: number;
  request: DhcpRequest;
  yiaddr: number;
  serverIp: number;
  subnetMask: number;
  router?: number;
  dns?: number;
  hostName?: string;
  domain?: string;
  leaseSeconds: number;
}

export function buildDhcpReply(p: DhcpReplyParams): Buffer {
  const options: Array<[number, Buffer]> = [[53, Buffer.from([p.type])], [54, u32(p.serverIp)]];
  if (p.type !== DhcpType.NAK) {
    options.push([51, u32(p.leaseSeconds)], [1, u32(p.subnetMask)]);
    if (p.router !== undefined) options.push([3, u32(p.router)]);
    if (p.dns !== undefined) options.push([6, u32(p.dns)]);
    if (p.hostName) options.push([12, Buffer.from(p.hostName, 'latin1')]);
    if (p.domain) options.push([15, Buffer.from(p.domain, 'latin1')]);
  }
  const optionBytes = options.reduce((n, [, v]) => n + 2 + v.length, 0) + 1;
  // BOOTP's 300-byte minimum: some old clients drop shorter replies.
  const b = Buffer.alloc(Math.max(300, FIXED + 4 + optionBytes));
  b[0] = 2; // BOOTREPLY
  b[1] = 1;
  b[2] = 6;
  b.writeUInt32BE(p.request.xid >>> 0, 4);
  b.writeUInt16BE(p.request.flags & 0x8000, 10);
  b.writeUInt32BE(p.type === DhcpType.NAK ? 0 : p.yiaddr >>> 0, 16);
  b.writeUInt32BE(p.serverIp >>> 0, 20);
  writeMac(b, 28, p.request.chaddr);
  b.writeUInt32BE(COOKIE, FIXED);
  let i = FIXED + 4;
  for (const [code, value] of options) {
    b[i] = code;
    b[i + 1] = value.length;
    b.set(value, i + 2);
    i += 2 + value.length;
  }
  b[i] = 255;
  return b;
}

function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value >>> 0);
  return b;
}
