import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startRepoServer, type RunningRepoServer } from '../server/server.js';
import { publishedReferenceGuest, runCli, type PublishedGuest } from '../testing/published-guest.js';

// The foundation end to end: the reference guest built, packed, served over
// loopback HTTP, and verified from the URL with the CLI a publisher would use.
let published: PublishedGuest;
let server: RunningRepoServer;

before(async () => {
  published = await publishedReferenceGuest();
  server = await startRepoServer({ repoDir: published.repoDir, port: 0 });
});

after(async () => {
  await server?.close();
});

test('hostme verify checks the signature and every object of the reference guest from its URL', async () => {
  const out = await runCli(['verify', server.url, 'hello', '--pubkey', `${published.keyFile}.pub`, '--json']);
  assert.equal(out.code, 0, out.stderr);
  const report = JSON.parse(out.stdout) as { ok: boolean; objectsChecked: number; signer: string; bad: unknown[] };
  assert.equal(report.ok, true);
  assert.equal(report.signer, published.key.keyId);
  assert.ok(report.objectsChecked > 3000, `only ${report.objectsChecked} objects checked`);
  assert.deepEqual(report.bad, []);
});

test('ls and inspect read the served repository', async () => {
  const ls = await runCli(['ls', server.url, '--json']);
  assert.equal(ls.code, 0, ls.stderr);
  const listing = JSON.parse(ls.stdout) as { images: Record<string, { latest: string }> };
  assert.equal(listing.images.hello?.latest, '1');
  const inspect = await runCli(['inspect', `${server.url}`, 'hello@1', '--json']);
  assert.equal(inspect.code, 0, inspect.stderr);
  const report = JSON.parse(inspect.stdout) as { blobs: Array<{ label: string; size: number; holes: number }> };
  const disk = report.blobs.find((b) => b.label.startsWith('disk'));
  assert.equal(disk?.size, 1024 ** 3);
  assert.ok(report.blobs.some((b) => b.label === 'kernel'));
});

test('verify with another publisher key is refused as a key mismatch', async () => {
  const other = `${published.keyFile}.other`;
  await runCli(['keygen', other]);
  const out = await runCli(['verify', server.url, 'hello', '--pubkey', `${other}.pub`]);
  assert.equal(out.code, 1);
  assert.match(out.stderr, /not trusted/);
});

test('the landing page tells how to run the image', async () => {
  const page = await (await fetch(`${server.url}/i/hello`)).text();
  assert.match(page, new RegExp(`hostme run ${server.url.replace(/[.]/g, '\\.')}/i/hello`));
});
