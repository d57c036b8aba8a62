/**
 * The DNS subset (RFC 1035) the gateway answers: one question per query, A
 * records for names under the network's own zone (NETWORK.hostme), an empty
 * NOERROR for other types of a known name (so resolvers asking AAAA first do
 * not wait), NXDOMAIN for unknown names in the zone and REFUSED for anything
 * outside it: the overlay has no recursive resolver, by design.
 */

export const DNS_PORT = 53;
const MAX_NAME = 255;
const TYPE_A = 1;
const CLASS_IN = 1;

export interface DnsQuery {
  id: number;
  flags: number;
  /** Lower-cased, without the trailing dot. */
  name: string;
  type: number;
  qclass: number;
  /** The question section as received (echoed in the reply). */
  question: Buffer;
}

/** Parses a standard query with exactly one question; undefined otherwise. */
export function parseDnsQuery(b: Buffer): DnsQuery | undefined {
  if (b.length < 12 || b.length > 512) return undefined;
  const flags = b.readUInt16BE(2);
  // QR must be 0 (a query), opcode 0 (QUERY); exactly one question.
  if ((flags & 0x8000) !== 0 || ((flags >> 11) & 0xf) !== 0 || b.readUInt16BE(4) !== 1) return undefined;
  const labels: string[] = [];
  let i = 12;
  let nameLength = 0;
  for (;;) {
    if (i >= b.length) return undefined;
    const length = b[i]!;
    if (length === 0) break;
    // Compression pointers (0xc0) are never needed in a question: refuse them.
    if (length > 63) return undefined;
    nameLength += length + 1;
    if (nameLength > MAX_NAME || i + 1 + length > b.length) return undefined;
    labels.push(b.toString('latin1', i + 1, i + 1 + length).toLowerCase());
    i += 1 + length;
  }
  i += 1;
  if (i + 4 > b.length) return undefined;
  return { id: b.readUInt16BE(0), flags, name: labels.join('.'), type: b.readUInt16BE(i), qclass: b.readUInt16BE(i + 2), question: b.subarray(12, i + 4) };
}

export const DnsRcode = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const;

export function buildDnsReply(query: DnsQuery, rcode: number, addresses: number[] = [], ttl = 60): Buffer {
  const answers = query.type === TYPE_A && query.qclass === CLASS_IN ? addresses.slice(0, 32) : [];
  const b = Buffer.alloc(12 + query.question.length + answers.length * 16);
  b.writeUInt16BE(query.id, 0);
  // QR=1, AA=1, RD copied, RA=0 (no recursion here).
  b.writeUInt16BE(0x8000 | 0x0400 | (query.flags & 0x0100) | (rcode & 0xf), 2);
  b.writeUInt16BE(1, 4);
  b.writeUInt16BE(answers.length, 6);
  query.question.copy(b, 12);
  let i = 12 + query.question.length;
  for (const address of answers) {
    b.writeUInt16BE(0xc00c, i); // pointer to the question's name
    b.writeUInt16BE(TYPE_A, i + 2);
    b.writeUInt16BE(CLASS_IN, i + 4);
    b.writeUInt32BE(ttl, i + 6);
    b.writeUInt16BE(4, i + 10);
    b.writeUInt32BE(address >>> 0, i + 12);
    i += 16;
  }
  return b;
}
