// "Run on my computer" for a browser image: `hostme run` boots the i686 guest
// (built for v86: IDE disk, ata_piix in its initrd) in QEMU from a served
// repository, streamed like any image.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { startRepoServer } from '../server/server.js';
import { runCli } from '../testing/published-guest.js';
import { prepareWeb, publishWebRepo } from '../web/web-fixtures.js';

const prepared = prepareWeb();
const skip = 'skip' in prepared ? prepared.skip : false;
let base = '';
after(async () => {
  if (base) await rm(base, { recursive: true, force: true });
});

test('hostme run boots the i686 image (the one the browser runs) in QEMU to HOSTME-READY', { skip, timeout: 400_000 }, async () => {
  if ('skip' in prepared) return;
  const published = await publishWebRepo(prepared.guest);
  base = published.base;
  const server = await startRepoServer({ repoDir: published.repoDir });
  try {
    const result = await runCli(
      ['run', `${server.url}/i/hello-i686`, '--cache', join(base, 'cache'), '--until', 'HOSTME-READY', '--timeout', '300', '--console', 'none', '--json'],
      { timeoutMs: 360_000 },
    );
    assert.equal(result.code, 0, result.stderr);
    const stats = JSON.parse(result.stdout) as { msToReady: number; fetchedBytes?: number };
    console.log(`hostme run hello-i686: HOSTME-READY after ${stats.msToReady} ms`);
    assert.ok(stats.msToReady > 0);
  } finally {
    await server.close();
  }
});
