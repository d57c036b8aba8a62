/**
 * BitTorrent v1 metainfo (BEP 3) for one file, with a BEP 19 web seed
 * (`url-list`): any client can fetch the pieces from that HTTP URL (Range
 * requests) and verify each against its SHA-1 here, and from other peers.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { bencode, type BValue } from './bencode.js';

export interface SingleFileTorrent {
  /** Suggested file name (no directories). */
  name: string;
  /** BEP 19 web seeds: URLs of the file itself. */
  webSeeds: string[];
  /** Optional tracker; clients download from web seeds without one. */
  announce?: string;
  comment?: string;
  /** Fixed for reproducible torrents (seconds since the epoch). */
  creationDate?: number;
}

/** 256 KiB, doubled until the file has at most ~2000 pieces (keeps the .torrent small). */
export function pieceLengthFor(size: number): number {
  let piece = 256 * 1024;
  while (size / piece > 2000 && piece < 16 * 1024 * 1024) piece *= 2;
  return piece;
}

export interface TorrentResult {
  torrent: Buffer;
  /** SHA-1 of the bencoded info dictionary (hex): the swarm's identity. */
  infoHash: string;
  pieceLength: number;
  pieces: number;
  length: number;
}

export async function makeTorrent(file: string, meta: SingleFileTorrent): Promise<TorrentResult> {
  const handle = await open(file, 'r');
  try {
    const { size } = await handle.stat();
    const pieceLength = pieceLengthFor(size);
    const hashes: Buffer[] = [];
    const buffer = Buffer.allocUnsafe(pieceLength);
    for (let at = 0; at < size; at += pieceLength) {
      const want = Math.min(pieceLength, size - at);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await handle.read(buffer, got, want - got, at + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      hashes.push(createHash('sha1').update(buffer.subarray(0, got)).digest());
    }
    const info: Record<string, BValue> = { length: size, name: meta.name, 'piece length': pieceLength, pieces: Buffer.concat(hashes) };
    const root: Record<string, BValue> = { info, 'url-list': meta.webSeeds, 'created by': 'hostme' };
    if (meta.announce) root.announce = meta.announce;
    if (meta.comment) root.comment = meta.comment;
    if (meta.creationDate !== undefined) root['creation date'] = meta.creationDate;
    return {
      torrent: bencode(root),
      infoHash: createHash('sha1').update(bencode(info)).digest('hex'),
      pieceLength,
      pieces: hashes.length,
      length: size,
    };
  } finally {
    await handle.close();
  }
}
