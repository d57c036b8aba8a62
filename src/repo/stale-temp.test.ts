import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, readdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HttpTransport } from '../store/http-transport.js';
import { hasCode, removeDir, tempDir } from '../testing/fixtures.js';
import { removeStaleTemp } from './stale-temp.js';

test('issue 15 case 9: temp files a crash left are removed at start; young ones and real files stay', async () => {
  const dir = await tempDir('hostme-stale-');
  try {
    await mkdir(join(dir, 'objects', 'ab'), { recursive: true });
    await mkdir(join(dir, '.render'));
    const old = new Date(Date.now() - 2 * 3600_000);
    for (const f of ['objects/ab/abcd.tmp-123-deadbeef', 'index.json.tmp-9-00', 'bases.partial', '.render/x.tmp-1-2']) {
      await writeFile(join(dir, f), 'x');
      await utimes(join(dir, f), old, old);
    }
    await writeFile(join(dir, 'objects', 'ab', 'young.tmp-5-aa'), 'x');
    await writeFile(join(dir, 'index.json'), '{}');
    assert.equal(await removeStaleTemp(dir), 3);
    assert.deepEqual((await readdir(join(dir, 'objects', 'ab'))).sort(), ['young.tmp-5-aa']);
    assert.deepEqual((await readdir(dir)).sort(), ['.render', 'index.json', 'objects']);
    assert.deepEqual(await readdir(join(dir, '.render')), ['x.tmp-1-2'], 'dot-directories are not the repository\'s');
  } finally {
    await removeDir(dir);
  }
});

test('issue 15 case 9: a redirect loop or a redirect to file:// is named once, not retried as "fetch failed"', async () => {
  let hits = 0;
  const server = createServer((req, res) => {
    hits++;
    if (req.url === '/loop/index.json') res.writeHead(302, { location: '/loop/index.json?again' }).end();
    else if (req.url?.startsWith('/loop/index.json')) res.writeHead(302, { location: '/loop/index.json' }).end();
    else res.writeHead(302, { location: 'file:///etc/passwd' }).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const fileRedirect = new HttpTransport(`${base}/file/`, { backoffMs: 1 });
    await assert.rejects(fileRedirect.read('index.json'), hasCode('store-bad-redirect', (m) => assert.match(m, /redirects to a URL that is not http\(s\).*\(not retried\)/)));
    assert.equal(hits, 1);
    const loop = new HttpTransport(`${base}/loop/`, { backoffMs: 1 });
    await assert.rejects(loop.read('index.json'), hasCode('store-bad-redirect', (m) => assert.match(m, /redirects in a loop/)));
  } finally {
    server.close();
  }
});
