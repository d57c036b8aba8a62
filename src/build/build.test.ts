/**
 * hostme build: manifest validation, inputs, templates, base fetching and
 * safe unpacking, disk sizing. No kernel, no QEMU: these builds take seconds.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { spawn } from 'node:child_process';
import { chmod, mkdir, readdir, writeFile, readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import tar from 'tar-stream';
import { buildImage, validateBuildManifest } from './index.js';
import { parseInputPairs, renderTemplate, resolveInputs } from './inputs.js';
import { rewriteUrl } from './fetch-base.js';
import { openRepository } from '../repo/repository.js';
import { hasCode, newKey, pseudoRandom, readBlob, removeDir, run, tempDir } from '../testing/fixtures.js';
import { hostmeBin, runCli } from '../testing/published-guest.js';
import { createKeyFiles } from '../pack/publisher-key.js';

const key = newKey();

interface TarEntry {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link';
  content?: string | Uint8Array;
  linkname?: string;
  mode?: number;
  uid?: number;
}

async function makeTar(entries: TarEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c) => void chunks.push(c as Buffer));
  const ended = new Promise<void>((resolve) => pack.on('end', () => resolve()));
  for (const e of entries) {
    const type = e.type ?? 'file';
    const body = type === 'file' ? Buffer.from(e.content ?? '') : Buffer.alloc(0);
    await new Promise<void>((resolve, reject) =>
      pack.entry({ name: e.name, type, linkname: e.linkname, mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644), uid: e.uid ?? 0, gid: e.uid ?? 0, mtime: new Date(0) }, body, (err) => (err ? reject(err) : resolve())),
    );
  }
  pack.finalize();
  await ended;
  return Buffer.concat(chunks);
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('build manifest and inputs', () => {
  const minimal = { name: 'demo', version: '1', base: { dir: 'root' } };

  test('schema errors name the path and the rule', () => {
    assert.throws(
      () => validateBuildManifest({ ...minimal, hardware: { memoryMiB: 8 } }, 'hostme.json'),
      hasCode('build-manifest-invalid', (m) => assert.match(m, /hardware\.memoryMiB: must be >= 16/)),
    );
    assert.throws(
      () => validateBuildManifest({ ...minimal, base: { dir: 'a', debs: ['x'] }, files: [{ src: 'a', dest: 'relative' }] }),
      hasCode('build-manifest-invalid', (m) => {
        assert.match(m, /base: must have exactly one of/);
        assert.match(m, /files\[0\]\.dest: must be an absolute path/);
      }),
    );
    assert.throws(() => validateBuildManifest({ ...minimal, name: 'Bad Name', extra: 1 }), hasCode('build-manifest-invalid', (m) => {
      assert.match(m, /name: must be lowercase/);
      assert.match(m, /\(manifest\): unknown key "extra"/);
    }));
    assert.throws(() => validateBuildManifest({ version: '1', base: { dir: 'x' } }), hasCode('build-manifest-invalid', (m) => assert.match(m, /name: is required/)));
    assert.throws(() => validateBuildManifest({ ...minimal, hardware: { diskSize: '12 parsecs' } }), hasCode('build-manifest-invalid', (m) => assert.match(m, /hardware\.diskSize: must be a size/)));
    const ok = validateBuildManifest({ ...minimal, version: 2, outputs: [{ format: 'qcow2', to: 'out/' }] });
    assert.equal(ok.version, '2');
    assert.equal(ok.hardware.memoryMiB, 256);
  });

  test('inputs are checked against their JSON Schema, with defaults and type coercion', async () => {
    const schema = {
      type: 'object',
      properties: { hostname: { type: 'string', pattern: '^[a-z]+$', default: 'hello' }, port: { type: 'integer', minimum: 1 } },
      required: ['port'],
    };
    assert.deepEqual(await resolveInputs(schema, parseInputPairs(['port=8080'])), { hostname: 'hello', port: 8080 });
    await assert.rejects(resolveInputs(schema, { hostname: 'hello' }), hasCode('inputs-invalid', (m) => assert.match(m, /inputs\.port: is required/)));
    await assert.rejects(resolveInputs(schema, { port: 'eighty' }), hasCode('inputs-invalid', (m) => assert.match(m, /inputs\.port: must be integer/)));
    await assert.rejects(resolveInputs(schema, { port: 1, hostname: 'NOPE!' }), hasCode('inputs-invalid', (m) => assert.match(m, /inputs\.hostname: must match pattern/)));
    assert.throws(() => parseInputPairs(['novalue']), hasCode('usage'));
  });

  test('a template referencing a missing input names the template and the input', () => {
    assert.equal(renderTemplate('hi {{ who }}, {{n}}!', { who: 'you', n: 3 }, '/etc/x'), 'hi you, 3!');
    assert.throws(
      () => renderTemplate('title={{ title }}', {}, '/www/index.html'),
      hasCode('template-input-missing', (m) => {
        assert.match(m, /\/www\/index\.html/);
        assert.match(m, /"title"/);
      }),
    );
  });

  test('mirror rules rewrite URL prefixes', () => {
    assert.equal(rewriteUrl('https://origin/a/b.tar', [{ from: 'https://origin/', to: 'http://local/m/' }]), 'http://local/m/a/b.tar');
    assert.equal(rewriteUrl('https://other/x', [{ from: 'https://origin/', to: 'http://local/' }]), 'https://other/x');
  });
});

describe('buildImage without a kernel', () => {
  let dir: string;
  let server: Server;
  let port: number;
  const served = new Map<string, Buffer>();
  const outside = () => join(dir, 'outside');

  before(async () => {
    dir = await tempDir('hostme-build-');
    await mkdir(outside());
    server = createServer((req, res) => {
      const body = served.get(req.url ?? '');
      if (!body) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-length': body.length }).end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    await new Promise((resolve) => server.close(resolve));
    await removeDir(dir);
  });

  /** Writes a manifest (and tarball) into a fresh subdirectory and builds it. */
  async function build(label: string, manifest: Record<string, unknown>, options: { tarball?: Buffer; inputs?: Record<string, unknown> } = {}) {
    const at = join(dir, label);
    await mkdir(at, { recursive: true });
    if (options.tarball) await writeFile(join(at, 'base.tar'), options.tarball);
    const base = options.tarball && !manifest.base ? { tarball: { path: 'base.tar', sha256: sha256(options.tarball) } } : manifest.base;
    await writeFile(join(at, 'hostme.json'), JSON.stringify({ name: 'demo', version: '1', ...manifest, base }));
    const steps: string[] = [];
    const result = await buildImage({
      manifestPath: join(at, 'hostme.json'),
      inputs: options.inputs,
      repoDir: join(at, 'repo'),
      key,
      workDir: join(at, 'work'),
      cacheDir: join(dir, 'cache'),
      onStep: (s) => steps.push(s),
    });
    return { result, steps, at };
  }

  async function assertOutsideUntouched() {
    assert.deepEqual(await readdir(outside()), [], 'nothing was written outside the work dir');
  }

  test('a tarball base with files, templates and volatile paths becomes a published ext4 image', async () => {
    const tarball = await makeTar([
      { name: './', type: 'directory' },
      { name: './etc/', type: 'directory' },
      { name: './etc/motd', content: 'base motd\n' },
      { name: './home/', type: 'directory' },
      { name: './home/user/', type: 'directory', uid: 1000, mode: 0o700 },
      { name: './home/user/notes', content: 'mine\n', uid: 1000, mode: 0o600 },
      { name: './var/cache/junk', content: 'x'.repeat(5000) },
      { name: './bin/tool', content: '#!/bin/sh\n', mode: 0o755 },
      { name: './bin/alias', type: 'symlink', linkname: 'tool' },
      { name: './bin/hard', type: 'link', linkname: './bin/tool' },
    ]);
    await mkdir(join(dir, 'full', 'files'), { recursive: true });
    await writeFile(join(dir, 'full', 'files', 'greeting'), 'Hello {{ who }} from {{ place }}\n');
    const { result, steps, at } = await build(
      'full',
      {
        files: [{ src: 'files/greeting', dest: '/etc/greeting', mode: '0640' }],
        templates: ['/etc/greeting'],
        inputs: { type: 'object', properties: { who: { type: 'string' }, place: { type: 'string', default: 'hostme' } }, required: ['who'] },
        volatile: ['/var/cache'],
        hardware: { diskSize: '8M' },
      },
      { tarball, inputs: { who: 'tests' } },
    );
    assert.deepEqual(steps, ['manifest', 'base', 'kernel', 'files', 'templates', 'volatile', 'disk', 'pack', 'done']);
    assert.equal(result.name, 'demo');
    assert.equal(result.pack.virtualSize, 8 * 1024 * 1024);
    // Read the disk back from the repository and look inside with debugfs.
    const repo = openRepository(join(at, 'repo'));
    const image = await repo.loadImage('demo', '1');
    assert.equal(image.manifest.boot.mode, 'firmware');
    const { data } = await readBlob(repo, image.manifest.disks[0]!);
    assert.equal(sha256(data), result.diskSha256);
    const disk = join(at, 'disk.raw');
    await writeFile(disk, data);
    const debugfs = async (cmd: string) => (await run('debugfs', ['-R', cmd, disk])).stdout;
    assert.equal(await debugfs('cat /etc/greeting'), 'Hello tests from hostme\n');
    assert.equal(await debugfs('cat /etc/motd'), 'base motd\n');
    assert.match(await debugfs('stat /etc/greeting'), /Mode:\s+0640/);
    assert.match(await debugfs('stat /home/user/notes'), /User:\s+1000\s+Group:\s+1000/);
    assert.match(await debugfs('stat /home/user'), /Mode:\s+0700/);
    assert.match(await debugfs('stat /bin/tool'), /Links: 2/);
    assert.match(await debugfs('stat /bin/alias'), /Fast link dest: "tool"/);
    assert.doesNotMatch(await debugfs('ls /var/cache'), /junk/, 'volatile content is left out');
    assert.match(await debugfs('stat /etc/motd'), /mtime: 0x6553f100/, 'times pinned to the build epoch');
  });

  test('a base digest mismatch names both digests', async () => {
    const tarball = await makeTar([{ name: 'a', content: 'a' }]);
    const wrong = 'ab'.repeat(32);
    await assert.rejects(
      build('mismatch', { base: { tarball: { path: 'base.tar', sha256: wrong } } }, { tarball }),
      hasCode('base-digest-mismatch', (m) => {
        assert.ok(m.includes(wrong), m);
        assert.ok(m.includes(sha256(tarball)), m);
      }),
    );
    served.set('/mismatch.tar', tarball);
    await assert.rejects(
      build('mismatch-url', { base: { tarball: { url: `http://127.0.0.1:${port}/mismatch.tar`, sha256: wrong } } }),
      hasCode('base-digest-mismatch', (m) => assert.ok(m.includes(wrong) && m.includes(sha256(tarball)), m)),
    );
  });

  test('an unreachable base URL is a clear error', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    await assert.rejects(
      build('unreachable', { base: { tarball: { url: `http://127.0.0.1:${closedPort}/base.tar`, sha256: 'cd'.repeat(32) } } }),
      hasCode('base-unreachable', (m) => assert.match(m, new RegExp(`cannot fetch the base http://127\\.0\\.0\\.1:${closedPort}/base\\.tar: ECONNREFUSED`))),
    );
  });

  test('URL bases go through the config mirrors and are cached by digest', async () => {
    const tarball = await makeTar([{ name: 'hello.txt', content: 'from the mirror\n' }]);
    served.set('/mirror/base.tar', tarball);
    const config = join(dir, 'config.json');
    await writeFile(config, JSON.stringify({ mirrors: [{ from: 'https://origin.invalid/', to: `http://127.0.0.1:${port}/mirror/` }] }));
    const saved = process.env.HOSTME_CONFIG;
    process.env.HOSTME_CONFIG = config;
    try {
      await build('mirror', { base: { tarball: { url: 'https://origin.invalid/base.tar', sha256: sha256(tarball) } } });
    } finally {
      if (saved === undefined) delete process.env.HOSTME_CONFIG;
      else process.env.HOSTME_CONFIG = saved;
    }
    assert.deepEqual(await readFile(join(dir, 'cache', 'bases', sha256(tarball))), tarball);
    served.delete('/mirror/base.tar');
    // Cached: no network needed (no mirror config either).
    await build('mirror-cached', { base: { tarball: { url: 'https://origin.invalid/base.tar', sha256: sha256(tarball) } } });
  });

  const evil: Array<[string, TarEntry[], RegExp]> = [
    ['absolute path', [{ name: '/etc/passwd-pwned', content: 'x' }], /absolute path/],
    ['".." entry', [{ name: 'a/' + '../'.repeat(8) + 'outside/pwned', content: 'x' }], /"\.\." component/],
    ['symlink escaping the root', [{ name: 'esc', type: 'symlink', linkname: '../../../../../../outside' }, { name: 'esc/pwned', content: 'x' }], /points outside the root/],
    ['hard link escaping the root', [{ name: 'hl', type: 'link', linkname: '../../outside/target' }], /"\.\." component/],
  ];
  for (const [what, entries, reason] of evil) {
    test(`a tarball with ${what} is refused and nothing is written outside`, async () => {
      await writeFile(join(dir, 'outside-target'), 'x');
      await assert.rejects(build(`evil-${what.replace(/\W+/g, '-')}`, {}, { tarball: await makeTar(entries) }), hasCode('unsafe-archive', (m) => assert.match(m, reason)));
      await assertOutsideUntouched();
    });
  }

  test('an absolute symlink in the base is followed inside the root, never on the host', async () => {
    const tarball = await makeTar([
      { name: 'sneaky', type: 'symlink', linkname: outside() },
      { name: 'sneaky/pwned', content: 'stays inside' },
    ]);
    const { at } = await build('abs-symlink', {}, { tarball });
    await assertOutsideUntouched();
    const repo = openRepository(join(at, 'repo'));
    const { data } = await readBlob(repo, (await repo.loadImage('demo', '1')).manifest.disks[0]!);
    await writeFile(join(at, 'disk.raw'), data);
    const { stdout } = await run('debugfs', ['-R', `cat ${outside()}/pwned`, join(at, 'disk.raw')]);
    assert.equal(stdout, 'stays inside');
  });

  test('hostme build (CLI): YAML manifest, --inputs file and --input, progress on stderr, --json summary; failures exit 1', async () => {
    const at = join(dir, 'cli');
    await mkdir(join(at, 'tree', 'etc'), { recursive: true });
    await writeFile(join(at, 'tree', 'etc', 'motd'), '{{ greeting }}, {{ who }}\n');
    await writeFile(
      join(at, 'hostme.yaml'),
      ['name: cli-demo', 'version: 3', 'base:', '  dir: tree', 'templates: [/etc/motd]', 'inputs:', '  greeting: { type: string }', '  who: { type: string, default: nobody }', 'hardware:', '  diskSize: 8M', ''].join('\n'),
    );
    await writeFile(join(at, 'values.json'), JSON.stringify({ greeting: 'Hi', who: 'file' }));
    const keyFile = join(at, 'publisher.key');
    await createKeyFiles(keyFile);
    const ok = await runCli(['build', join(at, 'hostme.yaml'), '--inputs', join(at, 'values.json'), '--input', 'who=cli', '--repo', join(at, 'repo'), '--key', keyFile, '--cache-dir', join(dir, 'cache'), '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stderr, /\[1\/8\] manifest[\s\S]*\[8\/8\] pack/);
    const summary = JSON.parse(ok.stdout) as { name: string; version: string; diskSha256: string; pack: { virtualSize: number } };
    assert.equal(summary.name, 'cli-demo');
    assert.equal(summary.version, '3');
    assert.match(summary.diskSha256, /^[0-9a-f]{64}$/);
    const repo = openRepository(join(at, 'repo'));
    const { data } = await readBlob(repo, (await repo.loadImage('cli-demo', '3')).manifest.disks[0]!);
    await writeFile(join(at, 'disk.raw'), data);
    assert.equal((await run('debugfs', ['-R', 'cat /etc/motd', join(at, 'disk.raw')])).stdout, 'Hi, cli\n');
    await writeFile(join(at, 'bad.json'), JSON.stringify({ name: 'x', version: '1', base: { dir: 'tree' }, hardware: { memoryMiB: 1 } }));
    const bad = await runCli(['build', join(at, 'bad.json'), '--repo', join(at, 'repo'), '--key', keyFile, '--json']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /hardware\.memoryMiB: must be >= 16/);
    assert.equal((JSON.parse(bad.stdout) as { error: { code: string } }).error.code, 'build-manifest-invalid');
  });

  test('a build as a normal user gives the same disk as root: owners and modes from the tarball set with debugfs', { skip: process.getuid?.() !== 0 && 'needs root to compare with an unprivileged build' }, async () => {
    const at = join(dir, 'nonroot');
    await mkdir(at, { recursive: true });
    const tarball = await makeTar([
      { name: 'home/', type: 'directory' },
      { name: 'home/u/', type: 'directory', uid: 1000, mode: 0o500 },
      { name: 'home/u/tool', content: 'x', uid: 1000, mode: 0o4750 },
      { name: 'etc/', type: 'directory' },
      { name: 'etc/shadow', content: 's', mode: 0o400 },
    ]);
    await writeFile(join(at, 'base.tar'), tarball);
    await writeFile(join(at, 'hostme.json'), JSON.stringify({ name: 'nonroot', version: '1', base: { tarball: { path: 'base.tar', sha256: sha256(tarball) } }, hardware: { diskSize: '8M' } }));
    const keyFile = join(at, 'publisher.key');
    await createKeyFiles(keyFile);
    await chmod(keyFile, 0o644);
    await chmod(dir, 0o755);
    await chmod(at, 0o777);
    const asRoot = await runCli(['build', join(at, 'hostme.json'), '--repo', join(at, 'repo-root'), '--key', keyFile, '--work-dir', join(at, 'work-root'), '--json']);
    assert.equal(asRoot.code, 0, asRoot.stderr);
    const child = spawn(process.execPath, [hostmeBin, 'build', join(at, 'hostme.json'), '--repo', join(at, 'repo-user'), '--key', keyFile, '--work-dir', join(at, 'work-user'), '--cache-dir', join(at, 'cache-user'), '--json'], {
      uid: 65534,
      gid: 65534,
      env: { ...process.env, HOME: at, XDG_CACHE_HOME: join(at, 'xdg') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let errText = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (errText += d.toString()));
    const code = await new Promise((resolve) => child.on('close', resolve));
    assert.equal(code, 0, errText);
    assert.equal((JSON.parse(out) as { diskSha256: string }).diskSha256, (JSON.parse(asRoot.stdout) as { diskSha256: string }).diskSha256);
    const repo = openRepository(join(at, 'repo-user'));
    await writeFile(join(at, 'disk.raw'), (await readBlob(repo, (await repo.loadImage('nonroot', '1')).manifest.disks[0]!)).data);
    const stat = async (p: string) => (await run('debugfs', ['-R', `stat ${p}`, join(at, 'disk.raw')])).stdout;
    assert.match(await stat('/home/u/tool'), /Mode:\s+04750[\s\S]*User:\s+1000\s+Group:\s+1000/);
    assert.match(await stat('/home/u'), /Mode:\s+0500/);
    assert.match(await stat('/etc/shadow'), /Mode:\s+0400[\s\S]*User:\s+0\s+Group:\s+0/);
    assert.deepEqual(await readdir(join(at, 'work-user')), [], 'the work dir is cleaned up');
  });

  test('odd file names: spaces and UTF-8 are fine, a double quote is refused clearly', async () => {
    const { at } = await build('names', {}, { tarball: await makeTar([{ name: 'dir with space/é ü.txt', content: 'ok' }]) });
    const repo = openRepository(join(at, 'repo'));
    await writeFile(join(at, 'disk.raw'), (await readBlob(repo, (await repo.loadImage('demo', '1')).manifest.disks[0]!)).data);
    assert.match((await run('debugfs', ['-R', 'stat "/dir with space/é ü.txt"', join(at, 'disk.raw')])).stdout, /mtime: 0x6553f100/);
    await assert.rejects(build('quote', {}, { tarball: await makeTar([{ name: 'say "hi"', content: 'x' }]) }), hasCode('unsupported-file-name'));
  });

  test('bootloader bios: MBR with syslinux mbr.bin, FAT boot partition with kernel and syslinux.cfg, ext4 root at partition 2', async () => {
    const tarball = await makeTar([{ name: 'etc/motd', content: 'on partition 2\n' }]);
    await mkdir(join(dir, 'bios'), { recursive: true });
    await writeFile(join(dir, 'bios', 'bzImage'), pseudoRandom(300_000, 3));
    const manifest = { boot: { bootloader: 'bios', kernel: join(dir, 'bios', 'bzImage'), cmdline: 'console=ttyS0 root=/dev/nvme0n1p2 ro' }, hardware: { diskSize: '40M' } };
    const { at, result } = await build('bios', manifest, { tarball });
    const repo = openRepository(join(at, 'repo'));
    const image = await repo.loadImage('demo', '1');
    assert.equal(image.manifest.boot.mode, 'firmware');
    const disk = join(at, 'disk.raw');
    await writeFile(disk, (await readBlob(repo, image.manifest.disks[0]!)).data);
    assert.equal(result.pack.virtualSize, 40 * 1024 * 1024);
    const table = JSON.parse((await run('sfdisk', ['--json', disk])).stdout) as { partitiontable: { partitions: Array<{ start: number; size: number; type: string; bootable?: boolean }> } };
    const [boot, rootPart] = table.partitiontable.partitions;
    assert.equal(boot!.start, 2048);
    assert.equal(boot!.type, 'e');
    assert.equal(boot!.bootable, true);
    assert.equal(rootPart!.type, '83');
    const mbr = await readFile('/usr/lib/syslinux/mbr/mbr.bin');
    assert.ok((await readFile(disk)).subarray(0, 440).equals(mbr.subarray(0, 440)), 'syslinux MBR code in the first 440 bytes');
    const fat = `${disk}@@${boot!.start * 512}`;
    const listing = (await run('mdir', ['-a', '-i', fat, '::/'])).stdout;
    for (const name of [/ldlinux\s+sys/, /ldlinux\s+c32/, /vmlinuz\s+300000/, /syslinux\s+cfg/]) assert.match(listing, name);
    assert.match((await run('mtype', ['-i', fat, '::/syslinux.cfg'])).stdout, /APPEND console=ttyS0 root=\/dev\/nvme0n1p2 ro/);
    const ext4 = `${disk}?offset=${rootPart!.start * 512}`;
    assert.equal((await run('debugfs', ['-R', 'cat /etc/motd', ext4])).stdout, 'on partition 2\n');
    await assert.rejects(build('bios-small', { ...manifest, hardware: { diskSize: '16M' } }, { tarball }), hasCode('disk-too-small', (m) => assert.match(m, /the disk of 16\.0 MiB .* needs at least \d+ MiB/)));
  });

  test('a disk size too small says how much is needed', async () => {
    const tarball = await makeTar([{ name: 'big.bin', content: pseudoRandom(6 * 1024 * 1024, 7) }]);
    await assert.rejects(
      build('small', { hardware: { diskSize: '4M' } }, { tarball }),
      hasCode('disk-too-small', (m) => {
        const need = Number(/needs at least (\d+) MiB/.exec(m)?.[1]);
        assert.ok(need > 6 && need < 16, m);
      }),
    );
  });
});
