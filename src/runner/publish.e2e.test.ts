/**
 * hostme run --publish end to end: examples/web (busybox httpd on port 80)
 * answers on a loopback port, and the restricted guest cannot reach the host.
 * One QEMU boot (TCG).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { publishedWebSite, type PublishedWebSite } from '../testing/web-site.js';
import { freeLoopbackPort } from '../host/ports.js';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { runCli } from '../testing/published-guest.js';
import { startImage } from './run-image.js';
import { parsePublish } from './publish.js';

let site: PublishedWebSite;
let work: string;
before(async () => {
  site = await publishedWebSite();
  work = await tempDir('hostme-publish-e2e-');
});
after(() => removeDir(work));

test('hostme run refuses a malformed --publish before booting anything', async () => {
  const result = await runCli(['run', site.repoDir, 'web', '--publish', '80', '--console', 'none'], { timeoutMs: 60_000 });
  assert.notEqual(result.code, 0);
  assert.match(result.stderr, /HOSTPORT:GUESTPORT/);
});

test('--publish HOSTPORT:80 makes examples/web answer on 127.0.0.1; the restricted guest cannot reach the host', async () => {
  // A host-side server the guest must NOT be able to reach (10.0.2.2 is the host in QEMU user networking).
  let hostHits = 0;
  const hostServer = createServer((_req, res) => {
    hostHits++;
    res.end('host');
  });
  await new Promise<void>((done) => hostServer.listen(0, '127.0.0.1', done));
  const hostPort = (hostServer.address() as AddressInfo).port;
  const port = await freeLoopbackPort();
  const running = await startImage({
    link: { repo: site.repoDir, name: 'web' },
    cacheDir: join(work, 'cache'),
    console: 'none',
    until: /HOSTME-READY/,
    keepRunning: true,
    timeoutMs: 240_000,
    overlay: 'ephemeral',
    publish: [parsePublish(`${port}:80`)],
  });
  try {
    await running.vm.ready;
    const response = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(60_000) });
    assert.equal(response.status, 200);
    assert.match(await response.text(), new RegExp(`served by guest ${site.guestHostname}`));
    const since = running.vm.consoleLength;
    running.vm.sendConsole(`wget -T 3 -q -O - http://10.0.2.2:${hostPort}/ && echo R""EACH:yes || echo R""EACH:no\n`);
    // The quotes keep the echoed command line itself from matching.
    const [answer] = await running.vm.waitForConsole(/REACH:(yes|no)/, { since, timeoutMs: 60_000 });
    assert.equal(answer, 'REACH:no');
    assert.equal(hostHits, 0);
  } finally {
    await running.vm.shutdown();
    await running.finished;
    hostServer.close();
  }
});
