import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { startRepoServer } from '../server/server.js';
import { tempDir, removeDir } from '../testing/fixtures.js';
import { RenderService, type RenderBuild, type RenderContext } from './render-service.js';

const TOKEN = 'render-secret';
const auth = { authorization: `Bearer ${TOKEN}` };

async function waitFor<T>(probe: () => T | undefined, what: string): Promise<T> {
  for (let i = 0; i < 400; i++) {
    const value = probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function withService(build: RenderBuild, body: (url: string, service: RenderService, state: string) => Promise<void>): Promise<void> {
  const dir = await tempDir('hostme-render-');
  const repoDir = join(dir, 'repo');
  await mkdir(repoDir);
  const service = new RenderService({ stateDir: dir, token: TOKEN, build });
  await service.start();
  const server = await startRepoServer({ repoDir, port: 0, render: service });
  try {
    await body(server.url, service, dir);
  } finally {
    await server.close();
    await service.close();
    await removeDir(dir);
  }
}

function post(url: string, body: unknown, token: string | null = TOKEN): Promise<Response> {
  return fetch(`${url}/api/builds`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
}

test('a build is accepted with 202, runs with progress and log, and reports its outputs', async () => {
  const seen: RenderContext[] = [];
  const build: RenderBuild = async (context) => {
    seen.push(context);
    context.step('render', 1, 2);
    context.log('rendering templates');
    context.step('pack', 2, 2);
    return { image: 'web@1' };
  };
  await withService(build, async (url) => {
    const response = await post(url, { manifest: { name: 'web' }, files: { 'rootfs/init': Buffer.from('#!/bin/sh\n').toString('base64') }, inputs: { title: 'x' } });
    assert.equal(response.status, 202);
    const created = (await response.json()) as { id: string; state: string };
    assert.equal(response.headers.get('location'), `/api/builds/${created.id}`);
    const final = await waitForState(url, created.id, 'succeeded');
    assert.deepEqual(final.outputs, { image: 'web@1' });
    assert.ok(final.log.includes('rendering templates'));
    assert.equal(final.progress, 1);
    assert.deepEqual(seen[0]!.inputs, { title: 'x' });
    const list = (await (await fetch(`${url}/api/builds`, { headers: auth })).json()) as { builds: Array<{ id: string }> };
    assert.ok(list.builds.some((b) => b.id === created.id));
  });
});

async function waitForState(url: string, id: string, state: string): Promise<{ state: string; outputs: unknown; log: string[]; progress: number; error: string | null }> {
  for (let i = 0; i < 400; i++) {
    const job = (await (await fetch(`${url}/api/builds/${id}`, { headers: auth })).json()) as { state: string; outputs: unknown; log: string[]; progress: number; error: string | null };
    if (job.state === state) return job;
    if (job.state === 'failed' && state !== 'failed') throw new Error(`build failed: ${job.error}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`build ${id} never reached ${state}`);
}

test('a failing build ends "failed" with the reason', async () => {
  await withService(async () => {
    throw new Error('destination refused the upload: HTTP 403');
  }, async (url) => {
    const { id } = (await (await post(url, { manifest: {} })).json()) as { id: string };
    const job = await waitForState(url, id, 'failed');
    assert.match(job.error ?? '', /HTTP 403/);
  });
});

test('writes need the bearer token; bad bodies and unsafe file paths are refused', async () => {
  await withService(async () => ({}), async (url) => {
    assert.equal((await post(url, { manifest: {} }, null)).status, 401);
    assert.equal((await post(url, { manifest: {} }, 'wrong')).status, 403);
    assert.equal((await post(url, { nope: 1 })).status, 400);
    const escape = await post(url, { manifest: {}, files: { '../../etc/passwd': 'eA==' } });
    assert.equal(escape.status, 400);
    assert.match(((await escape.json()) as { error: { message: string } }).error.message, /relative path/);
    assert.equal((await fetch(`${url}/api/builds/unknown-id`, { headers: auth })).status, 404);
    assert.equal((await fetch(`${url}/api/builds`)).status, 401, 'jobs are readable only with the token');
  });
});

test('a service killed mid-build requeues the job on restart, and gives up after repeated interruptions', async () => {
  const dir = await tempDir('hostme-render-restart-');
  try {
    const hang: RenderBuild = () => new Promise(() => {});
    // First life: the build hangs, then the process "dies" (the service is abandoned, not closed).
    const first = new RenderService({ stateDir: dir, token: TOKEN, build: hang });
    await first.start();
    const job = first.submit({ manifest: {}, files: {}, inputs: {}, outputs: [] });
    await waitFor(() => (first.get(job.id)?.state === 'running' ? true : undefined), 'running');

    // Second life: the interrupted job is queued again and this time succeeds.
    const second = new RenderService({ stateDir: dir, token: TOKEN, build: async () => ({ ok: true }) });
    assert.deepEqual(await second.start(), { requeued: 1, failed: 0 });
    const done = await waitFor(() => (second.get(job.id)?.state === 'succeeded' ? second.get(job.id) : undefined), 'succeeded');
    assert.equal(done.attempts, 2);
    await second.close();

    // A job interrupted twice is failed cleanly instead of looping forever.
    const third = new RenderService({ stateDir: dir, token: TOKEN, build: hang });
    await third.start();
    const stuck = third.submit({ manifest: {}, files: {}, inputs: {}, outputs: [] });
    await waitFor(() => (third.get(stuck.id)?.state === 'running' ? true : undefined), 'running');
    const fourth = new RenderService({ stateDir: dir, token: TOKEN, build: hang });
    await fourth.start();
    await waitFor(() => (fourth.get(stuck.id)?.state === 'running' ? true : undefined), 'running again');
    const fifth = new RenderService({ stateDir: dir, token: TOKEN, build: hang });
    assert.deepEqual(await fifth.start(), { requeued: 0, failed: 1 });
    assert.match(fifth.get(stuck.id)?.error ?? '', /interrupted by a service restart/);
    assert.notEqual(fifth.get(stuck.id)?.state, 'running');
  } finally {
    await removeDir(dir);
  }
});
