import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCli, hostmeBin } from '../testing/published-guest.js';
import { tempDir, removeDir, run } from '../testing/fixtures.js';
import { spawn, type ChildProcess } from 'node:child_process';

// The render service end to end: `hostme serve --render` as a user starts it,
// a build submitted over HTTP, the service killed with SIGKILL mid-build and
// restarted, and the job finishing with its image in the repository and a
// qcow2 export in the requested destination.
const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const TOKEN = 'render-e2e-token';
const auth = { authorization: `Bearer ${TOKEN}` };

async function filesOf(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (at: string): Promise<void> => {
    for (const entry of await readdir(at, { withFileTypes: true })) {
      const full = join(at, entry.name);
      if (entry.isDirectory()) await walk(full);
      else out[relative(dir, full)] = (await readFile(full)).toString('base64');
    }
  };
  // Every directory the manifest's files come from (rootfs/, net/, …), not the manifest itself.
  for (const entry of await readdir(dir, { withFileTypes: true })) if (entry.isDirectory()) await walk(join(dir, entry.name));
  return out;
}

function startServe(repo: string, port: number, env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, [hostmeBin, 'serve', repo, '--port', String(port), '--render', '--token', TOKEN, '--key', env.KEY!, '--quiet', '--render-output-root', env.OUT!], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

async function waitUp(url: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await fetch(`${url}/api/builds`, { headers: auth }).then((r) => r.ok, () => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('render service did not start');
}

type BuildStatus = { state: string; step: string; error: string | null; attempts: number; outputs: { image: string; exports: Array<{ files: Array<{ url: string }> }> } };

async function status(url: string, id: string): Promise<BuildStatus> {
  return (await (await fetch(`${url}/api/builds/${id}`, { headers: auth })).json()) as BuildStatus;
}

test('render API: build over HTTP, survive a kill -9 mid-build, finish with image and export', async () => {
  const dir = await tempDir('hostme-render-e2e-');
  const repo = join(dir, 'repo');
  const out = join(dir, 'exports');
  const key = join(dir, 'publisher.key');
  await runCli(['keygen', key]);
  await run('mkdir', ['-p', repo, out]);
  const env = { KEY: key, OUT: out, HOSTME_BUILD_CACHE: join(repoRoot, '.cache', 'build') };
  const port = 20000 + Math.floor(Math.random() * 20000);
  const url = `http://127.0.0.1:${port}`;
  let server = startServe(repo, port, env);
  try {
    await waitUp(url);
    const example = join(repoRoot, 'examples', 'hello');
    const manifest = JSON.parse(await readFile(join(example, 'hostme.json'), 'utf8')) as Record<string, unknown>;
    const body = { manifest, files: await filesOf(example), inputs: { hostname: 'rendered' }, outputs: [{ format: 'qcow2', to: out }] };
    const unauthorized = await fetch(`${url}/api/builds`, { method: 'POST', body: JSON.stringify(body) });
    assert.equal(unauthorized.status, 401);
    const submitted = await fetch(`${url}/api/builds`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: JSON.stringify(body) });
    assert.equal(submitted.status, 202);
    const { id } = (await submitted.json()) as { id: string };

    // Kill the service while the job runs, then start it again on the same state.
    for (let i = 0; i < 600 && (await status(url, id)).state !== 'running'; i++) await new Promise((r) => setTimeout(r, 50));
    server.kill('SIGKILL');
    await new Promise((r) => server.once('close', r));
    server = startServe(repo, port, env);
    await waitUp(url);

    let final = await status(url, id);
    for (let i = 0; i < 1200 && (final.state === 'queued' || final.state === 'running'); i++) {
      await new Promise((r) => setTimeout(r, 250));
      final = await status(url, id);
    }
    assert.equal(final.state, 'succeeded', `build ended ${final.state}: ${final.error}`);
    assert.equal(final.attempts, 2);
    assert.equal(final.outputs.image, 'hello@1');
    const qcow2 = final.outputs.exports[0]!.files[0]!.url;
    assert.ok((await stat(qcow2)).size > 0);
    const info = JSON.parse((await run('qemu-img', ['info', '--output=json', qcow2])).stdout) as { format: string };
    assert.equal(info.format, 'qcow2');
    const listing = (await (await fetch(`${url}/api/images`)).json()) as { images: Record<string, unknown> };
    assert.ok(listing.images.hello, 'the rendered image is not in the served repository');

    // A manifest that points outside its build directory is refused.
    const escaping = { ...body, manifest: { ...manifest, files: [{ src: '/etc', dest: '/hostetc' }] }, outputs: [] };
    const bad = await fetch(`${url}/api/builds`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body: JSON.stringify(escaping) });
    const badId = ((await bad.json()) as { id: string }).id;
    let badStatus = await status(url, badId);
    for (let i = 0; i < 400 && (badStatus.state === 'queued' || badStatus.state === 'running'); i++) {
      await new Promise((r) => setTimeout(r, 100));
      badStatus = await status(url, badId);
    }
    assert.equal(badStatus.state, 'failed');
    assert.match(badStatus.error ?? '', /points outside the build/);
  } finally {
    server.kill('SIGTERM');
    await removeDir(dir);
  }
});
