/**
 * The installer a visitor runs, end to end: `curl -fsSL HUB/install.sh | sh`
 * in a clean HOME and npm prefix installs the hub's own `npm pack` tarball
 * at user level (dependencies from the npm registry), `hostme --version`
 * works from the new prefix, and install-handler registers the links and
 * the .hostme type in the temporary XDG home.
 *
 * This machine reaches the npm registry but not GitHub, where
 * better-sqlite3 and zstd-napi download their prebuilt binaries (the
 * fallback, compiling them, takes 20+ minutes here). So the test serves
 * those two prebuilds itself, made from this checkout's own builds, through
 * the mirror settings prebuild-install reads (npm_config_NAME_binary_host):
 * what an offline mirror does. The npm download cache is shared between
 * runs (.cache/npm-installer-test); HOME and the prefix are fresh.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { createGzip } from 'node:zlib';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { pack as tarPack } from 'tar-stream';
import { startCli, type CliProcess } from '../testing/cli-process.js';
import { removeDir, run, tempDir } from '../testing/fixtures.js';
import { publishedWebSite } from '../testing/web-site.js';
import { REPO_ROOT } from '../web/web-fixtures.js';

let work: string;
let hub: CliProcess | undefined;
let mirror: Server | undefined;

before(async () => {
  work = await tempDir('hostme-installer-e2e-');
});
after(async () => {
  await hub?.kill('SIGTERM');
  await new Promise((r) => (mirror ? mirror.close(r) : r(undefined)));
  await removeDir(work);
});

/** The .tar.gz prebuild-install expects: build/Release/FILE. */
async function prebuildTarball(nodeFile: string): Promise<Buffer> {
  const tar = tarPack();
  const data = await readFile(nodeFile);
  tar.entry({ name: `build/Release/${nodeFile.split('/').pop()}`, size: data.length, mode: 0o755 }, data);
  tar.finalize();
  const chunks: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    const gz = tar.pipe(createGzip());
    gz.on('data', (c: Buffer) => chunks.push(c));
    gz.on('end', resolve);
    gz.on('error', reject);
  });
  return Buffer.concat(chunks);
}

async function moduleVersion(name: string): Promise<string> {
  return (JSON.parse(await readFile(join(REPO_ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
}

test('curl HUB/install.sh | sh installs hostme from the hub in a clean HOME and prefix; hostme --version and install-handler work', { timeout: 900_000 }, async () => {
  // 1. The package the hub serves: this checkout, packed.
  const packDir = join(work, 'pack');
  await run('mkdir', ['-p', packDir]);
  await run('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', packDir], { cwd: REPO_ROOT, maxBuffer: 16 << 20 });
  const [tgz] = (await readdir(packDir)).filter((f) => f.endsWith('.tgz'));
  assert.ok(tgz, 'npm pack made a tarball');
  const version = (JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;

  // 2. The prebuilt-binary mirror (see above).
  const files = new Map<string, Buffer>();
  const sqlite = await moduleVersion('better-sqlite3');
  files.set(`/v${sqlite}/better-sqlite3-v${sqlite}-node-v${process.versions.modules}-${process.platform}-${process.arch}.tar.gz`, await prebuildTarball(join(REPO_ROOT, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node')));
  const zstd = await moduleVersion('zstd-napi');
  files.set(`/v${zstd}/zstd-napi-v${zstd}-napi-v8-${process.platform}-${process.arch}.tar.gz`, await prebuildTarball(join(REPO_ROOT, 'node_modules', 'zstd-napi', 'build', 'Release', 'binding.node')));
  const asked: string[] = [];
  mirror = createServer((req, res) => {
    asked.push(req.url ?? '');
    const body = files.get(req.url ?? '');
    res.writeHead(body ? 200 : 404, { 'content-type': 'application/gzip' });
    res.end(body);
  });
  await new Promise<void>((r) => mirror!.listen(0, '127.0.0.1', r));
  const mirrorUrl = `http://127.0.0.1:${(mirror.address() as AddressInfo).port}`;

  // 3. The hub, serving the package and /install.sh.
  hub = await startCli(['serve', (await publishedWebSite()).repoDir, '--port', '0', '--hub', '--package', join(packDir, tgz), '--hub-state', join(work, 'hub.db'), '--json', '--quiet']);
  const hubUrl = String(hub.info.url);

  // 4. A visitor with nothing installed: fresh HOME, XDG dirs and prefix.
  const home = join(work, 'home');
  await run('mkdir', ['-p', home]);
  // Only the machine's network settings (proxy, CA bundle) pass through; nothing of the tester's npm or XDG set-up.
  const network = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => /^(https?_proxy|no_proxy|node_extra_ca_certs|ssl_cert_file|ssl_cert_dir)$/i.test(e[0]) && e[1] !== undefined));
  const env: Record<string, string> = {
    ...network,
    PATH: `/usr/local/bin:/usr/bin:/bin`,
    HOME: home,
    XDG_DATA_HOME: join(home, '.local', 'share'),
    XDG_CONFIG_HOME: join(home, '.config'),
    npm_config_cache: join(REPO_ROOT, '.cache', 'npm-installer-test'),
    npm_config_better_sqlite3_binary_host: mirrorUrl,
    npm_config_zstd_napi_binary_host: mirrorUrl,
    npm_config_update_notifier: 'false',
    npm_config_fund: 'false',
    npm_config_audit: 'false',
  };
  const installed = await run('sh', ['-c', `curl -fsSL '${hubUrl}/install.sh' | sh`], { env, maxBuffer: 64 << 20, timeout: 840_000 }).catch((err: { stdout?: string; stderr?: string; message: string }) => {
    throw new Error(`install.sh failed: ${err.message}\n${err.stdout ?? ''}\n${(err.stderr ?? '').slice(-4000)}\nmirror asked: ${asked.join(', ')}`);
  });
  assert.match(installed.stdout, /installing hostme from/);
  assert.match(installed.stdout, /hostme host --install/);
  const bin = join(home, '.local', 'bin', 'hostme');
  assert.ok((await stat(bin)).isFile() || (await stat(bin)).isSymbolicLink());
  const { stdout } = await run(bin, ['--version'], { env });
  assert.equal(stdout.trim(), version);
  // The native modules load from the new prefix (SQLite: the node's site list).
  const ls = await run(bin, ['host', 'ls', '--json', '--home', join(home, 'node')], { env });
  assert.deepEqual(JSON.parse(ls.stdout), { sites: [] });
  // install-handler ran against the temporary XDG home.
  const apps = await readdir(join(home, '.local', 'share', 'applications'));
  const desktop = apps.find((f) => f.startsWith('hostme') && f.endsWith('.desktop'));
  assert.ok(desktop, `a desktop entry in ${apps.join(', ')}`);
  assert.match(await readFile(join(home, '.local', 'share', 'applications', desktop), 'utf8'), /application\/vnd\.hostme\.reference\+json/);
  await stat(join(home, '.local', 'share', 'mime', 'packages', 'hostme.xml'));
});
