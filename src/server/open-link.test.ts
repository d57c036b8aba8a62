// The web+hostme: protocol handler target (GET /open?u=LINK) and the image
// page's browser links, against a real `hostme serve` over loopback.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { packImage } from '../pack/pack-image.js';
import { generatePublisherKey, parsePrivateKeyPem } from '../format/node/keys.js';
import { openRepository } from '../repo/repository.js';
import { linkParameter, MAX_LINK_LENGTH, resolveOpenLink } from './open-link.js';
import { startRepoServer, type RunningRepoServer } from './server.js';

let tmp = '';
let server: RunningRepoServer;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'hostme-open-link-'));
  const repo = openRepository(join(tmp, 'repo'));
  const key = parsePrivateKeyPem(generatePublisherKey().privatePem);
  const disk = join(tmp, 'disk.raw');
  await writeFile(disk, Buffer.alloc(1 << 20, 7));
  const kernel = join(tmp, 'kernel');
  await writeFile(kernel, Buffer.alloc(4096, 1));
  for (const version of ['1', '2']) {
    await packImage({ repo, workDir: tmp, disk, name: 'tiny', version, key, kernel, cmdline: 'console=ttyS0', arch: 'i686' });
  }
  await packImage({ repo, workDir: tmp, disk, name: 'big', version: '1', key, kernel, cmdline: 'console=ttyS0', arch: 'x86_64' });
  server = await startRepoServer({ repoDir: join(tmp, 'repo') });
});

after(async () => {
  await server?.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

const ORIGIN = 'https://images.example.org';

test('resolveOpenLink: every link form of this server names its run page', () => {
  const here = (link: string) => resolveOpenLink(link, ORIGIN);
  for (const link of [
    `web+hostme:${ORIGIN}/i/tiny`,
    `web+hostme:${encodeURIComponent(`${ORIGIN}/i/tiny`)}`,
    `web+hostme://${encodeURIComponent(`${ORIGIN}/i/tiny/run`)}`,
    `WEB+HOSTME:${ORIGIN}/i/tiny/`,
    `hostme+${ORIGIN}/i/tiny`,
    `${ORIGIN}/i/tiny/run`,
    `web+hostme:${ORIGIN}:443/i/tiny`,
  ]) {
    assert.deepEqual(here(link), { kind: 'here', name: 'tiny', runPath: '/i/tiny/run' }, link);
  }
  for (const link of [`web+hostme:${ORIGIN}/i/tiny@2`, `web+hostme:${ORIGIN}/i/tiny/2`, `web+hostme:${ORIGIN}/i/tiny/2/run`]) {
    assert.deepEqual(here(link), { kind: 'here', name: 'tiny', version: '2', runPath: '/i/tiny/2/run' }, link);
  }
});

test('resolveOpenLink: another site, or another path on this site, is "elsewhere" with its own run page and command', () => {
  assert.deepEqual(resolveOpenLink('web+hostme:https://other.example/i/hello@3', ORIGIN), {
    kind: 'elsewhere',
    name: 'hello',
    version: '3',
    repo: 'https://other.example',
    runUrl: 'https://other.example/i/hello/3/run',
    runCommand: 'hostme run https://other.example/i/hello%403',
  });
  assert.equal(resolveOpenLink(`web+hostme:${ORIGIN}/mirror/i/hello`, ORIGIN).kind, 'elsewhere');
  assert.equal(resolveOpenLink('web+hostme:http://images.example.org/i/hello', ORIGIN).kind, 'elsewhere', 'http is not the https origin');
});

test('resolveOpenLink: malformed links are invalid with a reason, never a redirect', () => {
  for (const [link, reason] of [
    [null, /No link/],
    ['', /No link/],
    ['javascript:alert(1)', /not a hostme link/],
    ['web+hostme:', /must point to an http/],
    ['web+hostme:ftp://x/i/a', /must point to an http/],
    ['web+hostme:/etc/passwd', /must point to an http/],
    ['/etc/passwd', /not a hostme link/],
    [`web+hostme:${ORIGIN}/i/Bad!Name`, /not a valid image name/],
    [`web+hostme:${ORIGIN}/i/a@bad%20version`, /not a valid image version/],
    [`web+hostme:${ORIGIN}`, /cannot be read/],
    ['web+hostme:%E0%A4%A', /cannot be read/],
    [`web+hostme:${ORIGIN}/i/${'a'.repeat(MAX_LINK_LENGTH)}`, /longer than/],
  ] as const) {
    const target = resolveOpenLink(link, ORIGIN);
    assert.equal(target.kind, 'invalid', String(link));
    assert.match((target as { reason: string }).reason, reason, String(link));
  }
});

test('linkParameter keeps a literal "+" (a hand-written /open?u=web+hostme:…)', () => {
  assert.equal(linkParameter('/open?u=web+hostme:https://h/i/a'), 'web+hostme:https://h/i/a');
  assert.equal(linkParameter('/open?x=1&u=web%2Bhostme%3Ahttps%3A%2F%2Fh%2Fi%2Fa'), 'web+hostme:https://h/i/a');
  assert.equal(linkParameter('/open'), null);
  assert.equal(linkParameter('/open?u=%E0%A4%A'), '%E0%A4%A');
});

async function open(link: string): Promise<Response> {
  return fetch(`${server.url}/open?u=${encodeURIComponent(link)}`, { redirect: 'manual' });
}

test('GET /open: a link to this server redirects (303, same origin) to the run page, which serves', async () => {
  const latest = await open(`web+hostme:${server.url}/i/tiny`);
  assert.equal(latest.status, 303);
  assert.equal(latest.headers.get('location'), '/i/tiny/run');
  assert.equal(latest.headers.get('cache-control'), 'no-store');
  const page = await fetch(new URL(latest.headers.get('location')!, server.url));
  assert.equal(page.status, 200);
  assert.match(await page.text(), /data-image="tiny"[^>]*data-version="2"/);

  const pinned = await open(`web+hostme:${encodeURIComponent(`${server.url}/i/tiny@1`)}`);
  assert.equal(pinned.status, 303);
  assert.equal(pinned.headers.get('location'), '/i/tiny/1/run');
  const pinnedPage = await fetch(`${server.url}/i/tiny/1/run`);
  assert.equal(pinnedPage.status, 200);
  assert.match(await pinnedPage.text(), /data-version="1"/);

  // What a browser sends when the link was written by hand, unencoded.
  const raw = await fetch(`${server.url}/open?u=web+hostme:${server.url}/i/tiny`, { redirect: 'manual' });
  assert.equal(raw.status, 303);
  assert.equal(raw.headers.get('location'), '/i/tiny/run');
});

test('GET /open: unknown image 404, another site 404 with its links, malformed 400; all HTML, escaped', async () => {
  const unknown = await open(`web+hostme:${server.url}/i/nope`);
  assert.equal(unknown.status, 404);
  assert.match(unknown.headers.get('content-type') ?? '', /text\/html/);
  assert.match(await unknown.text(), /no image named &quot;nope&quot; on this server/);

  const missingVersion = await open(`web+hostme:${server.url}/i/tiny@9`);
  assert.equal(missingVersion.status, 404);
  assert.match(await missingVersion.text(), /no version &quot;9&quot;/);

  const foreign = await open('web+hostme:https://other.example/i/hello');
  assert.equal(foreign.status, 404);
  assert.equal(foreign.headers.get('location'), null);
  const foreignHtml = await foreign.text();
  assert.match(foreignHtml, /This image is on another site/);
  assert.match(foreignHtml, /<a href="https:\/\/other\.example\/i\/hello\/run" rel="noopener noreferrer">/);
  assert.match(foreignHtml, /hostme run https:\/\/other\.example\/i\/hello</);

  const bad = await open('web+hostme:https://h/i/"><script>alert(1)</script>');
  assert.equal(bad.status, 400);
  const badHtml = await bad.text();
  assert.match(badHtml, /Not a hostme link/);
  assert.ok(!badHtml.includes('<script>'), 'the link is escaped');
  assert.match(bad.headers.get('content-security-policy') ?? '', /default-src 'none'/);

  const none = await fetch(`${server.url}/open`);
  assert.equal(none.status, 400);
  assert.match(await none.text(), /No link was given/);
});

test('image page: "Run here" for i686 direct-boot images (pinned too), "Run on my computer", the handler button script', async () => {
  const latest = await fetch(`${server.url}/i/tiny`);
  assert.match(latest.headers.get('content-security-policy') ?? '', /script-src 'self'/);
  const html = await latest.text();
  assert.match(html, /<a href="\/i\/tiny\/run"[^>]*>Run here, in this tab<\/a>/);
  assert.ok(html.includes(`<a href="hostme+${server.url}/i/tiny">Run on my computer</a>`));
  assert.match(html, /<button type="button" id="register-handler" hidden>Open web\+hostme: links with this site<\/button>/);
  assert.match(html, /<script type="module" src="\/_hostme\/handler.js"><\/script>/);
  assert.match(await (await fetch(`${server.url}/i/tiny/1`)).text(), /<a href="\/i\/tiny\/1\/run"[^>]*>Run here/);
  assert.doesNotMatch(await (await fetch(`${server.url}/i/big`)).text(), /Run here/, 'x86_64 images do not run in the browser');

  const handlerJs = fileURLToPath(new URL('../../dist-web/handler.js', import.meta.url));
  const asset = await fetch(`${server.url}/_hostme/handler.js`, { method: 'HEAD' });
  assert.equal(asset.status, existsSync(handlerJs) ? 200 : 404, 'served when scripts/build-web.sh has run');
});
