import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { isHostmeError } from '../errors.js';
import { bdecode, bencode, type BDecoded } from './bencode.js';
import { makeTorrent, pieceLengthFor } from './metainfo.js';

const refused = (input: string | Buffer, why: RegExp) =>
  assert.throws(() => bdecode(typeof input === 'string' ? Buffer.from(input, 'latin1') : input), (err: unknown) => isHostmeError(err, 'bencode-invalid') && why.test(err.message), String(input).slice(0, 40));

describe('bencode', () => {
  test('encodes the BEP 3 examples; dictionary keys sorted as raw bytes', () => {
    assert.equal(bencode('spam').toString(), '4:spam');
    assert.equal(bencode(3).toString(), 'i3e');
    assert.equal(bencode(-3).toString(), 'i-3e');
    assert.equal(bencode(0).toString(), 'i0e');
    assert.equal(bencode(['spam', 'eggs']).toString(), 'l4:spam4:eggse');
    assert.equal(bencode({ spam: ['a', 'b'], cow: 'moo' }).toString(), 'd3:cow3:moo4:spaml1:a1:bee');
    assert.equal(bencode({ b: 1, a: 2, 'a b': 3, Z: 4 }).toString(), 'd1:Zi4e1:ai2e3:a bi3e1:bi1ee');
    assert.equal(bencode(Buffer.from([0, 255])).toString('latin1'), '2:\u0000\u00ff');
    assert.equal(bencode('é').toString('latin1'), '2:\u00c3\u00a9', 'strings are UTF-8 bytes');
    assert.throws(() => bencode(1.5), (err: unknown) => isHostmeError(err, 'bencode-invalid'));
  });

  test('decodes what it encodes', () => {
    const value = { announce: 'http://t/x', info: { length: 5, name: 'a.iso', pieces: Buffer.alloc(20, 7), list: [1, -2, 'x', []] } };
    const decoded = bdecode(bencode(value)) as Map<string, BDecoded>;
    const info = decoded.get('info') as Map<string, BDecoded>;
    assert.equal(info.get('length'), 5n);
    assert.deepEqual(info.get('pieces'), Buffer.alloc(20, 7));
    assert.deepEqual(info.get('list'), [1n, -2n, Buffer.from('x'), []]);
    assert.ok(bencode(value).equals(bencode({ info: value.info, announce: value.announce })), 'canonical: key order does not matter');
  });

  test('hostile or non-canonical input is refused with the byte position, bounded in time and memory', () => {
    refused('i03e', /canonical/);
    refused('i-0e', /canonical/);
    refused('ie', /canonical/);
    refused('i12', /unterminated/);
    refused('4:spa', /past the end/);
    refused('99999999999:x', /past the end/);
    refused('04:spam', /canonical/);
    refused('d1:bi1e1:ai2ee', /sorted/);
    refused('d1:ai1e1:ai2ee', /sorted and unique/);
    refused('di1ei2ee', /not a string/);
    refused('l4:spam', /unterminated|unexpected end/);
    refused('i1ei2e', /trailing/);
    refused('x', /unexpected byte/);
    refused('', /unexpected end/);
    refused('l'.repeat(100_000) + 'e'.repeat(100_000), /nested too deeply/);
    assert.throws(() => bdecode(Buffer.alloc(100), { maxBytes: 10 }), (err: unknown) => isHostmeError(err, 'bencode-invalid') && /over the limit/.test(err.message));
  });
});

describe('torrent metainfo', () => {
  test('single file: length, name, piece length, SHA-1 pieces, url-list, info hash over the bencoded info', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hostme-torrent-'));
    try {
      const file = join(dir, 'x.iso');
      const data = Buffer.alloc(600 * 1024 + 5);
      for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
      await writeFile(file, data);
      const t = await makeTorrent(file, { name: 'x-1.iso', webSeeds: ['http://127.0.0.1:1/i/x/1/x.iso'] });
      assert.equal(t.pieceLength, 256 * 1024);
      assert.equal(t.pieces, 3);
      const root = bdecode(t.torrent) as Map<string, BDecoded>;
      assert.deepEqual(root.get('url-list'), [Buffer.from('http://127.0.0.1:1/i/x/1/x.iso')]);
      const info = root.get('info') as Map<string, BDecoded>;
      assert.equal(info.get('length'), BigInt(data.length));
      assert.equal((info.get('name') as Buffer).toString(), 'x-1.iso');
      const pieces = info.get('pieces') as Buffer;
      assert.equal(pieces.length, 60);
      assert.ok(pieces.subarray(40).equals(createHash('sha1').update(data.subarray(512 * 1024)).digest()), 'last, short piece');
      // Keys in order: "created by", "info", "url-list": the info dictionary's bytes end where "8:url-list" starts.
      const start = t.torrent.indexOf('4:infod') + 6;
      assert.equal(createHash('sha1').update(t.torrent.subarray(start, t.torrent.indexOf('8:url-list'))).digest('hex'), t.infoHash);
      assert.equal(pieceLengthFor(4 * 1024 ** 3), 4 * 1024 * 1024);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
