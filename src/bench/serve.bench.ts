/**
 * npm run bench:serve — requests per second of `hostme serve` against nginx
 * (one worker, sendfile on, the baseline a static host would use) on the same
 * repository files, measured side by side with wrk (keep-alive):
 *   object    a 256 KiB immutable object (objects/XX/ID)
 *   manifest  a signed manifest (manifests/NAME/VERSION.json, ~2 KiB)
 * Needs the Debian packages wrk and nginx-light (scripts/bench.sh installs them).
 * Options: --duration S --connections N --threads N --out FILE
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { loadavg } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pseudoRandom } from '../testing/fixtures.js';
import { Cleanup, runBench, fmtRatio, killTree, log, machineInfo, repoRoot, runCommand, startHostmeServe, table, withTimeout, writeJson } from './bench-util.js';

const { values: opts } = parseArgs({
  options: {
    duration: { type: 'string', default: '8' },
    connections: { type: 'string', default: '8' },
    threads: { type: 'string', default: '2' },
    out: { type: 'string', default: path.join(repoRoot, 'bench', 'results', 'serve.json') },
  },
});
const cleanup = new Cleanup();

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function makeRepo(dir: string): Promise<{ object: string; manifest: string }> {
  const body = Buffer.from(pseudoRandom(256 * 1024, 11));
  const id = createHash('sha256').update(body).digest('hex');
  await mkdir(path.join(dir, 'objects', id.slice(0, 2)), { recursive: true });
  await writeFile(path.join(dir, 'objects', id.slice(0, 2), id), body);
  await mkdir(path.join(dir, 'manifests', 'hello'), { recursive: true });
  const manifest = JSON.stringify({ hostmeEnvelope: 1, payloadType: 'application/vnd.hostme.manifest+json', payload: Buffer.from(pseudoRandom(1500, 5)).toString('base64'), signatures: [] }, null, 2);
  await writeFile(path.join(dir, 'manifests', 'hello', '1.json'), manifest);
  await writeFile(path.join(dir, 'hostme-repo.json'), JSON.stringify({ format: 'hostme-repo', formatVersion: 1 }));
  return { object: `/objects/${id.slice(0, 2)}/${id}`, manifest: '/manifests/hello/1.json' };
}

async function startNginx(root: string, work: string): Promise<number> {
  const port = await freePort();
  const conf = path.join(work, 'nginx.conf');
  await writeFile(
    conf,
    `worker_processes 1;
daemon off;
pid ${work}/nginx.pid;
error_log ${work}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path ${work}/body; proxy_temp_path ${work}/proxy; fastcgi_temp_path ${work}/fastcgi; uwsgi_temp_path ${work}/uwsgi; scgi_temp_path ${work}/scgi;
  types { application/json json; }
  default_type application/octet-stream;
  server { listen 127.0.0.1:${port}; root ${root}; etag on; }
}
`,
  );
  const child = spawn('nginx', ['-c', conf, '-p', work], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  cleanup.add('nginx', () => killTree(child, 'SIGTERM'));
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  for (let i = 0; i < 100; i++) {
    const up = await fetch(`http://127.0.0.1:${port}/hostme-repo.json`).then((r) => r.ok, () => false);
    if (up) return port;
    if (child.exitCode !== null) throw new Error(`nginx exited: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nginx did not come up: ${err}`);
}

async function wrk(url: string): Promise<{ rps: number; mbPerSec: number; raw: string }> {
  const result = await runCommand('wrk', ['-t', opts.threads, '-c', opts.connections, '-d', `${opts.duration}s`, '--latency', url], { timeoutMs: (Number(opts.duration) + 30) * 1000 });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(result.stdout)?.[1]);
  const transfer = /Transfer\/sec:\s+([\d.]+)(\w+)/.exec(result.stdout);
  const unit = { KB: 1 / 1024, MB: 1, GB: 1024 }[transfer?.[2] ?? 'MB'] ?? 1;
  if (!Number.isFinite(rps)) throw new Error(`wrk printed no Requests/sec:\n${result.stdout}${result.stderr}`);
  return { rps, mbPerSec: Number(transfer?.[1] ?? NaN) * unit, raw: result.stdout };
}

async function main(): Promise<void> {
  for (const tool of ['wrk', 'nginx']) {
    await runCommand('sh', ['-c', `command -v ${tool}`], { timeoutMs: 5000 }).catch(() => {
      throw new Error(`${tool} is not installed: apt-get install wrk nginx-light (scripts/bench.sh does)`);
    });
  }
  const tmpParent = path.join(repoRoot, '.cache', 'bench-tmp');
  await mkdir(tmpParent, { recursive: true });
  const tmp = await mkdtemp(path.join(tmpParent, 'serve-'));
  cleanup.add('tmp', () => rm(tmp, { recursive: true, force: true }));
  const repo = path.join(tmp, 'repo');
  const paths = await makeRepo(repo);
  // nginx's worker runs as nobody: the files must be world-readable.
  await runCommand('chmod', ['-R', 'a+rX', tmp], { timeoutMs: 10_000 });
  await chmod(path.join(repoRoot, '.cache'), 0o755).catch(() => {});
  await chmod(tmpParent, 0o755).catch(() => {});
  const nginxPort = await startNginx(repo, tmp);
  const hostme = await startHostmeServe(repo, cleanup);
  const servers = { hostme: hostme.url, nginx: `http://127.0.0.1:${nginxPort}` };
  const results: Record<string, Record<string, { rps: number; mbPerSec: number }>> = { object: {}, manifest: {} };
  for (const [what, p] of Object.entries(paths)) {
    for (const [name, base] of Object.entries(servers)) {
      await withTimeout(fetch(base + p).then((r) => r.arrayBuffer()), 10_000, 'warm-up'); // first read: the hot cache fills
      const r = await wrk(base + p);
      results[what === 'object' ? 'object' : 'manifest']![name] = { rps: Math.round(r.rps), mbPerSec: r.mbPerSec };
      log(`${what} from ${name}: ${Math.round(r.rps)} req/s`);
    }
  }
  const ratio = (w: string) => results[w]!.hostme!.rps / results[w]!.nginx!.rps;
  const rows = [['file', 'hostme serve req/s', 'nginx req/s', 'hostme / nginx', 'goal >= 0.8']];
  for (const w of ['object', 'manifest']) rows.push([w === 'object' ? '256 KiB object' : 'manifest', String(results[w]!.hostme!.rps), String(results[w]!.nginx!.rps), fmtRatio(ratio(w)), ratio(w) >= 0.8 ? 'PASS' : 'MISS']);
  process.stdout.write(`\nbench:serve: wrk -t${opts.threads} -c${opts.connections} -d${opts.duration}s, keep-alive, loopback; nginx 1 worker, sendfile on; hostme serve 1 process\n\n${table(rows)}\n`);
  await writeJson(opts.out, {
    date: new Date().toISOString(),
    machine: machineInfo(),
    options: { duration: Number(opts.duration), connections: Number(opts.connections), threads: Number(opts.threads) },
    results,
    ratios: { object: ratio('object'), manifest: ratio('manifest') },
    goal: 'hostme serve >= 0.8 x nginx requests per second',
    loadavgAtEnd: loadavg(),
    note: 'like for like: nginx with 1 worker process, hostme serve as 1 process; wrk and both servers share the same CPUs (see machine.cpus) with other work on the machine (loadavg): the ratios, measured side by side, are what compare',
  });
  log(`results written to ${path.relative(process.cwd(), opts.out)}`);
}

runBench('serve', main, cleanup);
