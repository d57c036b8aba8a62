import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { sha256File } from '../export/hash.js';
import { guestDebCache, packSmallImage, type SmallImage } from '../export/test-fixture.js';
import { packImage } from '../pack/pack-image.js';
import { loadPrivateKey } from '../pack/publisher-key.js';
import { openRepository } from '../repo/repository.js';
import { bdecode, type BDecoded } from '../torrent/bencode.js';
import { startRepoServer, type RunningRepoServer } from './server.js';

const run = promisify(execFile);

describe('hub: /i/NAME/NAME.iso and its torrent', () => {
  let img: SmallImage;
  let server: RunningRepoServer;
  let cacheDir: string;
  let isoSha: string;

  before(async () => {
    img = await packSmallImage();
    // A firmware-boot image beside it, by the same publisher (a repository pins its keys): it has no ISO.
    await mkdir(join(img.dir, 'fw'));
    const key = await loadPrivateKey(join(img.dir, 'publisher.key'));
    await packImage({ repo: openRepository(img.repoDir), workDir: join(img.dir, 'fw'), key, disk: img.guest.disk, name: 'firmware', version: '1', memoryMiB: 128, cpus: 1 });
    cacheDir = join(img.dir, 'iso-cache');
    server = await startRepoServer({ repoDir: img.repoDir, iso: { cacheDir, debCache: guestDebCache() } });
  });
  after(async () => {
    await server?.close();
    await img?.cleanup();
  });

  test('the landing page offers the pinned version\'s ISO and torrent', async () => {
    const html = await (await fetch(`${server.url}/i/small`)).text();
    assert.match(html, /<a href="\/i\/small\/1\/small\.iso">Bootable ISO<\/a>/);
    assert.match(html, /<a href="\/i\/small\/1\/small\.iso\.torrent">torrent<\/a>/);
    const firmware = await (await fetch(`${server.url}/i/firmware`)).text();
    assert.doesNotMatch(firmware, /Bootable ISO/);
  });

  test('GET /i/small/small.iso generates the ISO once (cached by manifest digest + reference), with ranges', { timeout: 300_000 }, async () => {
    const [a, b] = await Promise.all([fetch(`${server.url}/i/small/small.iso`), fetch(`${server.url}/i/small/1/small.iso`)]);
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.match(a.headers.get('content-disposition') ?? '', /filename="small-1\.iso"/);
    const body = Buffer.from(await a.arrayBuffer());
    assert.ok(body.equals(Buffer.from(await b.arrayBuffer())), 'the same ISO for the latest and the pinned URL');
    isoSha = (await import('node:crypto')).createHash('sha256').update(body).digest('hex');
    assert.equal(body.readUInt16LE(510), 0xaa55, 'a hybrid ISO');
    assert.equal(body.toString('latin1', 0x8001, 0x8006), 'CD001', 'ISO 9660 volume descriptor');
    const isos = (await readdir(cacheDir)).filter((n) => n.endsWith('.iso'));
    assert.equal(isos.length, 1, 'generated once for two concurrent requests');
    // A Host header of the client's choosing does not make a new ISO (the reference is the operator's).
    const evil = await fetch(`${server.url}/i/small/small.iso`, { headers: { Host: 'evil.example' }, method: 'HEAD' });
    assert.equal(evil.status, 200);
    assert.equal((await readdir(cacheDir)).filter((n) => n.endsWith('.iso')).length, 1);
    const range = await fetch(`${server.url}/i/small/1/small.iso`, { headers: { Range: 'bytes=32768-32773' } });
    assert.equal(range.status, 206);
    assert.equal(Buffer.from(await range.arrayBuffer()).toString('latin1', 1), 'CD001');
  });

  test('the torrent: BEP 3 metainfo whose web seed is the pinned ISO URL; aria2c downloads it through the web seed alone', { timeout: 300_000 }, async () => {
    const res = await fetch(`${server.url}/i/small/small.iso.torrent`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/x-bittorrent');
    const torrent = Buffer.from(await res.arrayBuffer());
    const meta = bdecode(torrent) as Map<string, BDecoded>;
    assert.deepEqual(meta.get('url-list'), [Buffer.from(`${server.url}/i/small/1/small.iso`)]);
    const info = meta.get('info') as Map<string, BDecoded>;
    assert.equal((info.get('name') as Buffer).toString(), 'small-1.iso');
    const file = join(img.dir, 'small.torrent');
    await writeFile(file, torrent);
    const out = join(img.dir, 'aria2');
    await mkdir(out);
    await run(
      'aria2c',
      ['--enable-dht=false', '--enable-dht6=false', '--bt-enable-lpd=false', '--enable-peer-exchange=false', '--seed-time=0', '--check-integrity=true',
        '--bt-stop-timeout=120', '--console-log-level=warn', '--summary-interval=0', '--download-result=hide', '--dir', out, file],
      { timeout: 240_000, maxBuffer: 4 << 20 },
    );
    const got = join(out, 'small-1.iso');
    assert.equal(await sha256File(got), isoSha, 'the downloaded ISO is the hub\'s, byte for byte');
    assert.equal(info.get('length'), BigInt((await readFile(got)).length));
  });

  test('hostile and wrong ISO/torrent requests get a clear 4xx', async () => {
    const status = async (path: string, init?: RequestInit) => {
      const r = await fetch(`${server.url}${path}`, init);
      return { status: r.status, body: await r.text() };
    };
    assert.equal((await status('/i/small/other.iso.torrent')).status, 404, 'another name than the image\'s');
    assert.equal((await status('/i/nope/nope.iso')).status, 404);
    assert.equal((await status('/i/small/9/small.iso.torrent')).status, 404, 'unknown version');
    const firmware = await status('/i/firmware/firmware.iso.torrent');
    assert.equal(firmware.status, 404);
    assert.match(firmware.body, /firmware/);
    assert.equal((await status('/i/small/small.iso/..%2f..%2fetc%2fpasswd')).status, 400);
    assert.equal((await status('/i/small/small.iso.torrent', { method: 'PUT', body: 'x' })).status >= 400, true);
    assert.equal((await status('/i/small/small.iso', { method: 'DELETE' })).status, 405);
    const unsatisfiable = await fetch(`${server.url}/i/small/small.iso`, { headers: { Range: 'bytes=999999999999-' } });
    assert.equal(unsatisfiable.status, 416);
  });
});
