/**
 * `hostme serve --hub --fallback` as its own process: no visitor hosts
 * examples/web, so the first request makes the hub boot it itself (the same
 * node code, in-process, over its own tunnel) and the page comes from that
 * VM. With --hosting invite: the fallback needs no invitation. One boot.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { publishedWebSite, type PublishedWebSite } from '../testing/web-site.js';
import { killLeftoverVms, startCli, type CliProcess } from '../testing/cli-process.js';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { freeLoopbackPort } from '../host/ports.js';

let site: PublishedWebSite;
let work: string;
let hub: CliProcess | undefined;
const env = { HOSTME_ACCEL: process.env.HOSTME_ACCEL ?? 'tcg' };

before(async () => {
  site = await publishedWebSite();
  work = await tempDir('hostme-fallback-e2e-');
});

after(async () => {
  await hub?.kill('SIGTERM');
  if (work) {
    await killLeftoverVms(join(work, 'fallback-node'));
    await removeDir(work);
  }
});

test('with --fallback and no visitor online, the hub boots the site itself and serves it; a clean stop stops its VM', { timeout: 600_000 }, async () => {
  const port = await freeLoopbackPort();
  hub = await startCli(['serve', site.repoDir, '--port', String(port), '--hub', '--fallback', '--hosting', 'invite', '--hub-state', join(work, 'hub.db'), '--json', '--quiet'], { env });
  const url = String(hub.info.url);
  assert.equal((await fetch(`${url}/s/nope/`)).status, 404, 'unknown sites are not booted');
  const seen: number[] = [];
  let page: { body: string; node: string | null } | undefined;
  const deadline = Date.now() + 480_000;
  while (!page && Date.now() < deadline) {
    const r = await fetch(`${url}/s/web/`, { signal: AbortSignal.timeout(120_000) });
    seen.push(r.status);
    const body = await r.text();
    if (r.status === 200) page = { body, node: r.headers.get('x-hostme-node') };
    else {
      assert.equal(r.status, 503, body);
      assert.match(body, /web is starting/);
      await new Promise((res) => setTimeout(res, 1000));
    }
  }
  assert.ok(page, `never served: ${seen.join(',')}\n${hub.stderr().slice(-3000)}`);
  assert.match(page.body, new RegExp(`served by guest ${site.guestHostname}`));
  const nodes = ((await (await fetch(`${url}/api/hub/nodes`)).json()) as { nodes: Array<{ id: string; ready: string[]; fallback: boolean }> }).nodes;
  assert.equal(nodes.length, 1);
  assert.equal(nodes[0]!.fallback, true, 'the hub\'s own node, admitted despite --hosting invite');
  assert.equal(page.node, nodes[0]!.id);
  assert.deepEqual(nodes[0]!.ready, ['web']);
  // SIGTERM: the fallback VM is powered off with the hub.
  assert.equal(await hub.kill('SIGTERM'), 0);
  hub = undefined;
  assert.equal(await killLeftoverVms(join(work, 'fallback-node')), 0, 'no QEMU left behind');
});
