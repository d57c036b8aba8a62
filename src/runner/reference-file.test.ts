/**
 * The .hostme reference file: served with its own content type by the
 * landing page server, and `hostme run NAME.hostme` boots the image it names,
 * pinned to the publisher key it carries (one QEMU boot).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startRepoServer, type RunningRepoServer } from '../server/server.js';
import { publishedWebSite } from '../testing/web-site.js';
import { newKey, removeDir, tempDir } from '../testing/fixtures.js';
import { runCli } from '../testing/published-guest.js';
import { formatPublicKeyLine } from '../format/node/keys.js';
import { REFERENCE_MEDIA_TYPE } from './reference-file.js';

let dir: string;
let server: RunningRepoServer;
before(async () => {
  dir = await tempDir('hostme-reference-test-');
  server = await startRepoServer({ repoDir: (await publishedWebSite()).repoDir });
});
after(async () => {
  await server.close();
  await removeDir(dir);
});

test('the landing page offers NAME.hostme, served as application/vnd.hostme.reference+json; hostme run FILE.hostme boots it', async () => {
  const page = await (await fetch(`${server.url}/i/web`)).text();
  assert.match(page, /href="\/r\/web\.hostme"/);
  const response = await fetch(`${server.url}/r/web.hostme`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-type'), REFERENCE_MEDIA_TYPE);
  assert.match(String(response.headers.get('content-disposition')), /filename="web\.hostme"/);
  const reference = (await response.json()) as Record<string, string>;
  assert.equal(reference.link, `${server.url}/i/web`);
  assert.match(reference.publisher!, /^hostme-ed25519 /);
  assert.equal((await fetch(`${server.url}/r/nosuch.hostme`)).status, 404);

  const file = join(dir, 'web.hostme');
  await writeFile(file, JSON.stringify(reference));
  const env = { HOSTME_ACCEL: process.env.HOSTME_ACCEL ?? 'tcg' };
  // Pinned key: a reference naming another publisher is refused before anything boots.
  const forged = join(dir, 'forged.hostme');
  await writeFile(forged, JSON.stringify({ ...reference, publisher: formatPublicKeyLine(newKey().publicKeyRaw).trim() }));
  const refused = await runCli(['run', forged, '--cache', join(dir, 'cache'), '--console', 'none', '--timeout', '60'], { env, timeoutMs: 120_000 });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /trust|key|sign/i);
  const bad = join(dir, 'bad.hostme');
  await writeFile(bad, '{"hostme":"reference"}');
  const invalid = await runCli(['run', bad, '--console', 'none'], { env, timeoutMs: 60_000 });
  assert.match(invalid.stderr, /not a hostme reference file/);

  const ran = await runCli(['run', file, '--cache', join(dir, 'cache'), '--until', 'web: serving', '--timeout', '240', '--console', 'none', '--fresh'], { env, timeoutMs: 300_000 });
  assert.equal(ran.code, 0, ran.stderr);
  assert.match(ran.stderr, /booting web@1/);
});
