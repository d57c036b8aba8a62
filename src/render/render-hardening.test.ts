/**
 * Issue 15 against the render service (`hostme serve --render`): each case
 * an attacker holding the token reproduced, now refused with the rule it broke.
 * Builds run for real (in their child process), but every hostile one is
 * refused before anything slow: no debootstrap, no big disk.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { startRepoServer } from '../server/server.js';
import { validateBuildManifest } from '../build/index.js';
import { newKey, removeDir, tempDir } from '../testing/fixtures.js';
import { hostmeBin } from '../testing/published-guest.js';
import { isolatedRepositoryBuild } from './isolated-build.js';
import { renderPolicy, type RenderLimits } from './policy.js';
import { RenderService, type RenderBuild } from './render-service.js';

const TOKEN = 'hardening-token';
const auth = { authorization: `Bearer ${TOKEN}` };
const key = newKey();
type JobView = { id: string; state: string; error: string | null; log: string[] };

interface Harness {
  url: string;
  dir: string;
  service: RenderService;
  post(body: unknown): Promise<{ status: number; json: { id?: string; error?: { code: string; message: string } } }>;
  finished(id: string): Promise<JobView>;
}

async function withRender(options: { policy?: Parameters<typeof renderPolicy>[0]; build?: RenderBuild; limits?: Partial<RenderLimits> }, body: (h: Harness) => Promise<void>): Promise<void> {
  const dir = await tempDir('hostme-render-hard-');
  const repoDir = join(dir, 'repo');
  await mkdir(repoDir);
  await writeFile(join(repoDir, 'hello.txt'), 'static\n');
  const policy = renderPolicy({ ...options.policy, limits: { ...options.policy?.limits, ...options.limits } });
  await mkdir(join(dir, 'state'));
  const service = new RenderService({ stateDir: join(dir, 'state'), token: TOKEN, policy, build: options.build ?? isolatedRepositoryBuild(repoDir, key, join(dir, 'cache')) });
  await service.start();
  const server = await startRepoServer({ repoDir, port: 0, render: service });
  const post = async (request: unknown) => {
    const r = await fetch(`${server.url}/api/builds`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(request) });
    return { status: r.status, json: (await r.json()) as { id?: string; error?: { code: string; message: string } } };
  };
  const finished = async (id: string): Promise<JobView> => {
    for (let i = 0; i < 1200; i++) {
      const job = (await (await fetch(`${server.url}/api/builds/${id}`, { headers: auth })).json()) as JobView;
      if (job.state === 'succeeded' || job.state === 'failed') return job;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`build ${id} did not finish`);
  };
  try {
    await body({ url: server.url, dir, service, post, finished });
  } finally {
    await server.close();
    await service.close();
    await removeDir(dir);
  }
}

const tiny = (extra: Record<string, unknown> = {}) => ({ manifest: { name: 'tiny', version: '1', base: { dir: 'root' }, ...extra }, files: { 'root/hello': Buffer.from('hi\n').toString('base64') } });

test('case 1: outputs outside the operator\'s roots, URL prefixes and buckets are refused with the rule', async () => {
  const dir = await tempDir('hostme-render-out-');
  try {
    const root = join(dir, 'exports');
    await mkdir(root);
    await symlink('/etc', join(root, 'escape'));
    await withRender({ policy: { outputRoots: [root], outputUrls: ['https://uploads.example.org/images/'], outputBuckets: ['s3://renders/public/'] } }, async ({ post }) => {
      for (const [to, rule] of [
        ['/any/dir', /not under an output root \(allowed: .*exports\)/],
        [join(root, 'escape', 'x'), /not under an output root/],
        [join(root, '..', 'other'), /not under an output root/],
        ['relative/dir', /must be an absolute path/],
        ['http://attacker/', /not under an allowed URL prefix \(allowed: https:\/\/uploads\.example\.org\/images\/\)/],
        ['https://uploads.example.org/images-evil/', /not under an allowed URL prefix/],
        ['https://user:pw@uploads.example.org/images/', /credentials in the URL/],
        ['s3://any-bucket/x', /not under an allowed bucket/],
        ['s3://renders/public/../private/', /not under an allowed bucket/],
        ['ftp://x/', /only directories under the output roots/],
      ] as const) {
        const refused = await post({ ...tiny(), outputs: [{ format: 'raw', to }] });
        assert.equal(refused.status, 400, to);
        assert.equal(refused.json.error?.code, 'render-output-refused', to);
        assert.match(refused.json.error!.message, rule, to);
      }
      for (const to of [join(root, 'web'), 'https://uploads.example.org/images/web/', 's3://renders/public/web']) {
        assert.equal((await post({ ...tiny({ version: to.length.toString() }), outputs: [{ format: 'raw', to }] })).status, 202, to);
      }
    });
    // No roots configured: every output is refused (the default).
    await withRender({}, async ({ post }) => {
      const refused = await post({ ...tiny(), outputs: [{ format: 'raw', to: dir }] });
      assert.match(refused.json.error!.message, /none configured \(--render-output-root\)/);
    });
  } finally {
    await removeDir(dir);
  }
});

test('case 2: debootstrap suite, packages and mirror come from known values and the operator\'s allow-list', async () => {
  for (const suite of ['bookworm', 'trixie', 'bullseye', 'stable', 'testing', 'sid']) {
    assert.equal(validateBuildManifest({ name: 'd', version: '1', base: { debootstrap: { suite } } }).base.debootstrap?.suite, suite);
  }
  assert.throws(() => validateBuildManifest({ name: 'd', version: '1', base: { debootstrap: { suite: '--version' } } }), /base\.debootstrap\.suite: must be one of "buster", "bullseye", "bookworm", "trixie"/);
  assert.throws(() => validateBuildManifest({ name: 'd', version: '1', base: { debootstrap: { suite: 'trixie', packages: ['--foreign'] } } }), /packages\[0\]: must be a Debian package name/);
  assert.throws(() => validateBuildManifest({ name: 'd', version: '1', base: { debootstrap: { suite: 'trixie', mirror: 'javascript:alert(1)' } } }), /mirror: must be an http\(s\):\/\/ or file:\/\/ URL/);
  await withRender({ policy: { mirrors: ['http://mirror.internal/debian/'] } }, async ({ post, finished }) => {
    const option = await post({ manifest: { name: 'd', version: '1', base: { debootstrap: { suite: '--version' } } } });
    const optionJob = await finished(option.json.id!);
    assert.match(optionJob.error ?? '', /^build-manifest-invalid: .*base\.debootstrap\.suite: must be one of/);
    for (const mirror of ['file:///srv/evil/', 'http://evil.example/debian/', 'http://mirror.internal/debian-evil/']) {
      const job = await finished((await post({ manifest: { name: 'd', version: '1', base: { debootstrap: { suite: 'trixie', mirror } } } })).json.id!);
      assert.match(job.error ?? '', /^build-mirror-refused: base\.debootstrap\.mirror: ".*" is not a mirror the operator allows \(allowed: http:\/\/mirror\.internal\/debian\/\)/, mirror);
    }
  });
});

test('case 3: a catastrophic input pattern is stopped while the server keeps answering', async () => {
  await withRender({}, async ({ url, post, finished }) => {
    const hostile = tiny({ inputs: { word: { type: 'string', pattern: '^(a|a)+$' } } });
    const submitted = await post({ ...hostile, inputs: { word: `${'a'.repeat(40)}b` } });
    assert.equal(submitted.status, 202);
    const id = submitted.json.id!;
    for (let i = 0; i < 400; i++) {
      const job = (await (await fetch(`${url}/api/builds/${id}`, { headers: auth })).json()) as JobView;
      if (job.state !== 'queued') break;
      await new Promise((r) => setTimeout(r, 25));
    }
    // In flight: static files and the API still answer (on the old code, not for hours).
    const stat = await fetch(`${url}/hello.txt`, { signal: AbortSignal.timeout(60_000) });
    assert.equal(stat.status, 200);
    assert.equal(await stat.text(), 'static\n');
    const job = await finished(id);
    assert.equal(job.state, 'failed');
    assert.match(job.error ?? '', /^inputs-timeout: .*simplify its patterns/);
  });
});

test('case 6: file and disk limits, job time limit (killed, cleaned, not retried), queue cap, rate limit, pruned bodies', async () => {
  await withRender({ limits: { maxFileBytes: 64 * 1024 ** 2, maxDiskBytes: 128 * 1024 ** 2 } }, async ({ post, finished }) => {
    const random = await finished((await post(tiny({ files: [{ random: { size: '60G', seed: 'x' }, dest: '/pad' }] }))).json.id!);
    assert.match(random.error ?? '', /^build-limit-exceeded: files\[0\]\.random\.size: 60G is more than this service's 67108864-byte file limit/);
    const disk = await finished((await post(tiny({ hardware: { diskSize: '1G' } }))).json.id!);
    assert.match(disk.error ?? '', /^build-limit-exceeded: hardware\.diskSize: 1G/);
  });

  // A build past its time limit is killed with its process group, its work removed, and never retried.
  await withRender({ limits: { maxJobSeconds: 1 } }, async ({ dir, post, finished }) => {
    const slow = tiny({ inputs: { word: { type: 'string', pattern: '^(a|a)+$' } } });
    const id = (await post({ ...slow, inputs: { word: `${'a'.repeat(40)}b` } })).json.id!;
    const job = await finished(id);
    assert.match(job.error ?? '', /^render-limit-exceeded: the build ran longer than the 1-second limit/);
    assert.deepEqual(await readdir(join(dir, 'state', 'jobs')).catch(() => []), []);
    const again = new RenderService({ stateDir: join(dir, 'state'), token: TOKEN, build: async () => ({}) });
    assert.deepEqual(await again.start(), { requeued: 0, failed: 0 });
    await again.close();
  });

  // Queue cap and rate limit (an in-process build that waits, so jobs stay queued).
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  await withRender({ build: () => gate.then(() => ({})), limits: { maxQueued: 2, submitsPerMinute: 4, keepFinished: 2 } }, async ({ dir, service, post }) => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const accepted = await post({ manifest: { n: i } });
      assert.equal(accepted.status, 202);
      ids.push(accepted.json.id!);
      await new Promise((r) => setTimeout(r, 50)); // let the first one start running
    }
    const full = await post({ manifest: {} });
    assert.equal(full.status, 503);
    assert.equal(full.json.error?.code, 'queue-full');
    release();
    // Finished jobs beyond the newest two are pruned (gone), the others succeeded.
    for (const id of ids) {
      for (let i = 0; i < 400 && ['queued', 'running'].includes(service.get(id)?.state ?? 'gone'); i++) await new Promise((r) => setTimeout(r, 25));
    }
    assert.equal((await post({ manifest: {} })).status, 202);
    const limited = await post({ manifest: {} });
    assert.equal(limited.status, 429);
    assert.match(limited.json.error!.message, /at most 4 builds per minute/);
    await new Promise((r) => setTimeout(r, 200));
    // Finished jobs keep no request body, and only the newest 2 are kept.
    const db = new Database(join(dir, 'state', 'render.sqlite'), { readonly: true });
    try {
      const rows = db.prepare(`SELECT state, request FROM jobs`).all() as Array<{ state: string; request: string }>;
      const done = rows.filter((r) => r.state === 'succeeded');
      assert.ok(done.length <= 2, `${done.length} finished jobs kept`);
      for (const r of done) assert.equal(r.request, 'null');
    } finally {
      db.close();
    }
  });
});

async function listen(handler: Parameters<typeof createServer>[1]): Promise<{ server: Server; url: string; hits: string[] }> {
  const hits: string[] = [];
  const server = createServer((req, res) => {
    hits.push(req.url ?? '');
    handler!(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits };
}

test('case 7 and 9: base URLs on internal addresses, non-http redirects and loops are refused, named, without echoing content', async () => {
  const internal = await listen((req, res) => {
    if (req.url === '/loop') return void res.writeHead(302, { location: '/loop2' }).end();
    if (req.url === '/loop2') return void res.writeHead(302, { location: '/loop' }).end();
    if (req.url === '/to-file') return void res.writeHead(302, { location: 'file:///etc/passwd' }).end();
    res.writeHead(200).end('internal secret');
  });
  try {
    const tarball = (url: string) => ({ manifest: { name: 't', version: '1', base: { tarball: { url, sha256: 'a'.repeat(64) } } } });
    await withRender({ policy: { fetchUrls: [`${internal.url}/allowed/`, `${internal.url}/loop`, `${internal.url}/loop2`, `${internal.url}/to-file`] } }, async ({ post, finished }) => {
      const refused = await finished((await post(tarball(`${internal.url}/secret`))).json.id!);
      assert.match(refused.error ?? '', /^base-url-refused: base\.tarball\.url: 127\.0\.0\.1:\d+ is on an internal address \(127\.0\.0\.1\); the operator allows such sources with --render-allow-fetch/);
      const byName = await finished((await post(tarball(internal.url.replace('127.0.0.1', 'localhost') + '/secret'))).json.id!);
      assert.match(byName.error ?? '', /^base-url-refused: .*internal address/);
      assert.deepEqual(internal.hits, [], 'nothing reached the internal server');
      const file = await finished((await post(tarball('file:///etc/passwd'))).json.id!);
      assert.match(file.error ?? '', /file:\/\/ URLs are not fetched; only http and https are/);
      const toFile = await finished((await post(tarball(`${internal.url}/to-file`))).json.id!);
      assert.match(toFile.error ?? '', /^base-url-refused: base\.tarball\.url: .*\/to-file redirects to a file:\/\/ URL/);
      const loop = await finished((await post(tarball(`${internal.url}/loop`))).json.id!);
      assert.match(loop.error ?? '', /^base-redirect-loop: base\.tarball\.url: .*\/loop redirects in a loop/);
      // An allowed internal source with the wrong content: the error says so without the content's hash.
      const mismatch = await finished((await post(tarball(`${internal.url}/allowed/x.tar`))).json.id!);
      assert.match(mismatch.error ?? '', /^base-digest-mismatch: base\.tarball\.url: the download does not match base\.tarball\.sha256/);
      const secretHash = (await import('node:crypto')).createHash('sha256').update('internal secret').digest('hex');
      assert.ok(!mismatch.error!.includes(secretHash));
    });
  } finally {
    internal.server.close();
  }
});

test('case 6: SIGTERM stops a running build within seconds and leaves nothing behind', async () => {
  const dir = await tempDir('hostme-render-term-');
  const hang = await listen(() => {}); // a base that never answers: the build waits in its fetch
  try {
    const repo = join(dir, 'repo');
    await mkdir(repo);
    await writeFile(join(dir, 'key'), key.privateKey!.export({ format: 'pem', type: 'pkcs8' }).toString());
    const serve = spawn(process.execPath, [hostmeBin, 'serve', repo, '--port', '0', '--json', '--render', '--token', TOKEN, '--key', join(dir, 'key'), '--quiet', '--render-allow-fetch', `${hang.url}/`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    serve.stdout.on('data', (d: Buffer) => (out += d.toString()));
    for (let i = 0; i < 300 && !out.includes('\n'); i++) await new Promise((r) => setTimeout(r, 50));
    const url = (JSON.parse(out) as { url: string }).url;
    const posted = await fetch(`${url}/api/builds`, { method: 'POST', headers: auth, body: JSON.stringify({ manifest: { name: 'h', version: '1', base: { tarball: { url: `${hang.url}/base.tar`, sha256: 'b'.repeat(64) } } } }) });
    const { id } = (await posted.json()) as { id: string };
    for (let i = 0; i < 600 && hang.hits.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(hang.hits.length, 1, 'the build reached its fetch');
    const exited = new Promise<number | null>((r) => serve.on('exit', (code) => r(code)));
    serve.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 30_000))]);
    assert.notEqual(code, 'hung', 'the server ignored SIGTERM while a build ran');
    const { stdout: ps } = await promisify(execFile)('ps', ['-eo', 'args']);
    assert.ok(!ps.split('\n').some((l) => l.includes(repo) || (l.includes('build-child.js') && l.includes(dir))), 'no build process left');
    assert.deepEqual(await readdir(join(repo, '.render', 'jobs')).catch(() => []), []);
    const db = new Database(join(repo, '.render', 'render.sqlite'), { readonly: true });
    const row = db.prepare('SELECT state, error FROM jobs WHERE id = ?').get(id) as { state: string; error: string };
    db.close();
    assert.equal(row.state, 'failed');
    assert.match(row.error, /^render-stopped: the render service shut down/);
  } finally {
    hang.server.closeAllConnections();
    hang.server.close();
    await removeDir(dir);
  }
});
