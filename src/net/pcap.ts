/**
 * The classic libpcap file format (what `tcpdump -r` reads): a 24-byte
 * global header, then per frame a 16-byte record header and the bytes.
 * Link type 1 (Ethernet), microsecond timestamps, little-endian.
 */
export const PCAP_HEADER = (() => {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(0xa1b2c3d4, 0);
  b.writeUInt16LE(2, 4);
  b.writeUInt16LE(4, 6);
  b.writeUInt32LE(65535, 16); // snap length
  b.writeUInt32LE(1, 20); // LINKTYPE_ETHERNET
  return b;
})();

export function pcapRecord(frame: Buffer, now = Date.now()): Buffer {
  const b = Buffer.allocUnsafe(16 + frame.length);
  b.writeUInt32LE(Math.floor(now / 1000), 0);
  b.writeUInt32LE((now % 1000) * 1000, 4);
  b.writeUInt32LE(frame.length, 8);
  b.writeUInt32LE(frame.length, 12);
  frame.copy(b, 16);
  return b;
}
