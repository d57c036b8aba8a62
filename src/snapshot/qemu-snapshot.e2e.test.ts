import { test, before, after } from 'node:test';
import { createServer, type AddressInfo } from 'node:net';
import assert from 'node:assert/strict';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { openRepository } from '../repo/repository.js';
import { publishDerived } from '../repo/versions.js';
import { isHole } from '../format/chunk-index.js';
import { startRepoServer, type RunningRepoServer } from '../server/server.js';
import { startWanProxy, type WanProxy } from '../bench/wan-proxy.js';
import { runCli, copyRepo } from '../testing/published-guest.js';
import { tempDir, removeDir } from '../testing/fixtures.js';
import { snapshotReferenceGuest, type SnapshotGuest } from '../testing/snapshot-guest.js';
import { startImage, type RunningImage } from '../runner/run-image.js';
import { guestShell } from '../testing/net-guest.js';
import { controlRequest } from '../net/control.js';

// QEMU memory snapshots end to end: hostme snapshot (real QEMU, TCG) on the
// reference guest with a virtio-blk initrd, then hostme run resuming it.
let guest: SnapshotGuest;
let work: string;
let repoDir: string;
const env = { HOSTME_ACCEL: 'tcg' };
const ANSWER = ['--until', 'hi-42', '--type', 'echo hi-$((6*7))\\n'];

before(async () => {
  work = await tempDir('hostme-qsnap-');
  guest = await snapshotReferenceGuest(join(work, 'guest'));
  repoDir = guest.repoDir;
  const made = await runCli(['snapshot', 'hello', '--repo', repoDir, '--key', guest.keyFile, '--json'], { env, timeoutMs: 300_000 });
  assert.equal(made.code, 0, made.stderr);
});

after(async () => {
  await controlRequest(join(work, 'net'), { op: 'stop' }).catch(() => {});
  await removeDir(work);
});

async function snapshotManifest(dir: string) {
  const image = await openRepository(dir).loadImage('hello', '2');
  const snapshot = image.manifest.qemuSnapshot;
  assert.ok(snapshot, 'hello@2 has a qemuSnapshot');
  return { image, snapshot };
}

test('the snapshot pins the machine, and hostme run resumes it: a command typed after the resume is answered', async () => {
  const { snapshot } = await snapshotManifest(repoDir);
  assert.equal(snapshot.machine, 'pc-q35-7.2');
  assert.equal(snapshot.cpu, 'qemu64');
  assert.equal(snapshot.accel, 'tcg');
  assert.match(snapshot.qemu, /^7\.2\.\d+$/);
  assert.equal(snapshot.ram.size, 256 * 1024 * 1024);
  assert.equal(snapshot.readyMark, 'HOSTME-READY');
  const index = await openRepository(repoDir).readIndex(snapshot.ram, openRepository(repoDir).objects, 'ram');
  const holes = index.ids.filter(isHole).length;
  assert.ok(holes > index.ids.length / 2, `most RAM chunks are holes (${holes} of ${index.ids.length})`);
  // The trial resume (as root, over the lazy FUSE file) recorded the chunks a resume reads first.
  const workingSet = snapshot.ramWorkingSet ?? [];
  assert.ok(workingSet.length > 0, 'the snapshot has a recorded RAM working set');
  assert.equal(new Set(workingSet).size, workingSet.length, 'each chunk once');
  assert.ok(workingSet.some((c) => !isHole(index.ids[c]!)), 'the working set names stored chunks');

  const run = await runCli(['run', repoDir, 'hello@2', '--cache', join(work, 'cache-a'), ...ANSWER, '--timeout', '120', '--console', 'none'], { env });
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stderr, /resumed hello@2 from its snapshot/);
  assert.doesNotMatch(run.stderr, /booting hello/);

  // Without the snapshot the same image still boots (NVMe, its own cmdline).
  const cold = await runCli(['run', repoDir, 'hello@2', '--no-resume', '--instance', 'cold', '--cache', join(work, 'cache-a'), ...ANSWER, '--timeout', '180', '--console', 'none'], { env });
  assert.equal(cold.code, 0, cold.stderr);
  assert.match(cold.stderr, /booting hello@2/);
});

test('a lazy-RAM resume (the default as root: its recorded working set first, the rest on demand over FUSE) answers a command, and the run reports its phases', async () => {
  const statsFile = join(work, 'lazy-stats.json');
  const run = await runCli(['run', repoDir, 'hello@2', '--instance', 'lazy', '--cache', join(work, 'cache-lazy'), ...ANSWER, '--timeout', '120', '--console', 'none', '--stats-json', statsFile], { env: { ...env, HOSTME_LAZY_RAM: '1' } });
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stderr, /resumed hello@2 from its snapshot/);
  assert.doesNotMatch(run.stderr, /lazy RAM needs root|fetched whole/);
  const phases = (JSON.parse(await readFile(statsFile, 'utf8')) as { phases: Record<string, number> }).phases;
  for (const [before, after] of [['start', 'resume-planned'], ['resume-planned', 'qemu-started'], ['qemu-started', 'running'], ['running', 'ready']] as const) {
    assert.ok(phases[before]! <= phases[after]!, `${before} (${phases[before]}) before ${after} (${phases[after]}): ${JSON.stringify(phases)}`);
  }
});

test('a tampered RAM chunk or device state is refused and named, and the guest boots from scratch instead', async () => {
  for (const [blob, label] of [['ram', 'snapshot RAM'], ['deviceState', 'snapshot device state']] as const) {
    const copy = await copyRepo(repoDir, join(work, `tampered-${blob}`));
    const { snapshot } = await snapshotManifest(copy);
    const repo = openRepository(copy);
    const index = await repo.readIndex(snapshot[blob], repo.objects, blob);
    const id = index.ids.find((x) => !isHole(x))!;
    const file = join(copy, 'objects', id.slice(0, 2), id);
    await writeFile(file, Buffer.alloc((await stat(file)).size, 0x5a));
    // The whole fetch (HOSTME_LAZY_RAM=0) checks every RAM chunk before QEMU starts; the lazy path has its own test below.
    const run = await runCli(['run', copy, 'hello@2', '--cache', join(work, `cache-t-${blob}`), ...ANSWER, '--timeout', '180', '--console', 'none'], { env: { ...env, HOSTME_LAZY_RAM: '0' } });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, new RegExp(`snapshot not resumed: ${label} refused`));
    assert.match(run.stderr, /booting hello@2/);
    assert.doesNotMatch(run.stderr, /resumed hello@2/);
  }
});

test('with lazy RAM, a tampered working-set chunk is refused and named before the guest runs, and it boots from scratch', async () => {
  const copy = await copyRepo(repoDir, join(work, 'tampered-lazy'));
  const { snapshot } = await snapshotManifest(copy);
  const repo = openRepository(copy);
  const index = await repo.readIndex(snapshot.ram, repo.objects, 'ram');
  const chunk = (snapshot.ramWorkingSet ?? []).find((c) => !isHole(index.ids[c]!));
  assert.ok(chunk !== undefined, 'the working set names a stored chunk');
  const id = index.ids[chunk]!;
  const file = join(copy, 'objects', id.slice(0, 2), id);
  await writeFile(file, Buffer.alloc((await stat(file)).size, 0x5a));
  const run = await runCli(['run', copy, 'hello@2', '--cache', join(work, 'cache-t-lazy'), ...ANSWER, '--timeout', '180', '--console', 'none'], { env: { ...env, HOSTME_LAZY_RAM: '1' } });
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stderr, /snapshot not resumed.*snapshot RAM refused/);
  assert.match(run.stderr, /booting hello@2/);
  assert.doesNotMatch(run.stderr, /resumed hello@2/);
});

test('a snapshot saved by another QEMU version falls back to a cold boot with a one-line notice', async () => {
  const copy = await copyRepo(repoDir, join(work, 'other-qemu'));
  const { image, snapshot } = await snapshotManifest(copy);
  await publishDerived(openRepository(copy), image, { qemuSnapshot: { ...snapshot, qemu: '7.1.0' } }, guest.key, '3');
  const run = await runCli(['run', copy, 'hello@3', '--cache', join(work, 'cache-q'), ...ANSWER, '--timeout', '180', '--console', 'none'], { env });
  assert.equal(run.code, 0, run.stderr);
  const notices = run.stderr.split('\n').filter((l) => l.includes('snapshot not resumed'));
  assert.equal(notices.length, 1, run.stderr);
  assert.match(notices[0]!, /saved by QEMU 7\.1\.0 and this is QEMU 7\.2\.\d+; booting from scratch/);
  assert.match(run.stderr, /booting hello@3/);
});

test('kill -9 during the RAM fetch over a slow link, then a second run: nothing half-written is trusted and the resume works', async () => {
  let server: RunningRepoServer | undefined;
  let proxy: WanProxy | undefined;
  try {
    server = await startRepoServer({ repoDir, port: 0 });
    proxy = await startWanProxy({ targetPort: Number(new URL(server.url).port), rttMs: 40, downMbit: 16, lifetimeMs: 600_000 });
    const url = `http://127.0.0.1:${proxy.port}`;
    const cache = join(work, 'cache-kill');
    const blobs = join(cache, 'blobs');
    const first = runCli(['run', url, 'hello@2', '--cache', cache, ...ANSWER, '--timeout', '120', '--console', 'none'], { env });
    // Kill as soon as the RAM file is being written (a temporary file under blobs/).
    let killed = false;
    for (let i = 0; i < 600 && !killed; i++) {
      const names = await readdir(blobs).catch(() => [] as string[]);
      // A whole fetch writes a temporary file; a lazy one (src/lazyfs) a .partial file.
      if (names.some((n) => n.includes('.tmp-') || n.endsWith('.partial'))) {
        first.kill('SIGKILL');
        killed = true;
      } else await sleep(25);
    }
    const outcome = await first;
    assert.ok(killed, `the RAM fetch was never seen in progress: ${outcome.stderr}`);
    const left = await readdir(blobs);
    const { snapshot } = await snapshotManifest(repoDir);
    assert.ok(!left.includes(snapshot.ram.index), 'no complete-looking RAM file after the kill');

    const second = await runCli(['run', url, 'hello@2', '--cache', cache, '--fresh', ...ANSWER, '--timeout', '180', '--console', 'none'], { env });
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /resumed hello@2 from its snapshot/);
    assert.ok((await readdir(blobs)).includes(snapshot.ram.index));

    // Warm: the verified RAM file and the cached indexes and manifest need no request at all.
    const statsFile = join(work, 'warm-stats.json');
    const warm = await runCli(['run', url, 'hello@2', '--cache', cache, ...ANSWER, '--timeout', '120', '--console', 'none', '--stats-json', statsFile], { env });
    assert.equal(warm.code, 0, warm.stderr);
    assert.match(warm.stderr, /resumed hello@2 from its snapshot/);
    const stats = JSON.parse(await readFile(statsFile, 'utf8')) as { requests: number; bytesFetched: number };
    assert.equal(stats.requests, 0, 'a warm resume makes no request');
  } finally {
    await proxy?.close();
    await server?.close();
  }
});

test('two instances resumed from one snapshot are distinct (own MAC, DHCP address, generation id, the current time) and confined like a boot', { timeout: 900_000 }, async () => {
  const { snapshot } = await snapshotManifest(repoDir);
  assert.equal(snapshot.hotplugPorts, 2);
  assert.equal(snapshot.vmgenid, true);
  assert.match(snapshot.afterResume ?? '', /\{epoch\}/);
  const netDir = join(work, 'net');
  const running: RunningImage[] = [];
  try {
    const seen: Array<{ mac: string; ip: string; genid: string }> = [];
    for (const instance of ['alpha', 'beta']) {
      const notBefore = Math.floor(Date.now() / 1000);
      const run = await startImage({
        link: { repo: repoDir, name: 'hello', version: '2' },
        cacheDir: join(work, 'cache-net'),
        instance,
        console: 'none',
        keepRunning: true,
        timeoutMs: 600_000,
        accel: 'tcg',
        trusted: [guest.key],
        net: { network: 'snapnet', dir: netDir },
      });
      running.push(run);
      assert.ok(run.resumed, `${instance} was resumed: ${run.notices.join('; ')}`);
      // Resumed confined like a boot: sandboxed, and (when the tests run as root) not root.
      const status = await readFile(`/proc/${run.vm.pid}/status`, 'utf8');
      assert.match(status, /^Seccomp:\s*2$/m, 'QEMU runs under its seccomp sandbox');
      if (process.getuid?.() === 0) assert.doesNotMatch(status, /^Uid:.*\b0\b/m, `QEMU is not root: ${/^Uid:.*$/m.exec(status)?.[0]}`);
      // The after-resume command (typed by hostme) renews DHCP on the hot-plugged NIC.
      const [, ip] = await run.vm.waitForConsole(/HOSTME-NET eth0 (\d+\.\d+\.\d+\.\d+)/, { timeoutMs: 240_000, since: 0 }).catch(async (err: unknown) => {
        const end = await run.finished.catch((e: unknown) => e);
        throw new Error(`${instance}: ${(err as Error).message}; run ended ${JSON.stringify(end)}; console ${run.vm.console}`);
      });
      const mac = /([0-9a-f]{2}(?::[0-9a-f]{2}){5})/.exec(await guestShell(run.vm, 'cat /sys/class/net/eth0/address', 120_000))![1]!;
      const clock = Number(/\n(\d{10})\r?\n/.exec(await guestShell(run.vm, 'date +%s', 120_000))![1]);
      assert.ok(clock >= notBefore, `${instance}'s clock was set at resume (guest ${clock}, host before the run ${notBefore})`);
      const { guid } = await run.vm.qmp.execute<{ guid: string }>('query-vm-generation-id');
      seen.push({ mac, ip: ip!, genid: guid });
    }
    assert.notEqual(seen[0]!.mac, seen[1]!.mac, 'different MACs');
    assert.notEqual(seen[0]!.ip, seen[1]!.ip, 'different DHCP addresses');
    assert.notEqual(seen[0]!.genid, seen[1]!.genid, 'different VM generation ids');
    // Both answer at once on the overlay: alpha reaches beta by its new address.
    await guestShell(running[0]!.vm, `ping -c 1 -W 10 ${seen[1]!.ip}`, 120_000);
  } finally {
    for (const run of running) {
      await run.vm.shutdown();
      await run.finished.catch(() => undefined);
    }
  }
});

test('a resume with --publish plugs a user-network NIC: the guest leases an address from QEMU user networking', { timeout: 600_000 }, async () => {
  const port = await freePort();
  const run = await runCli(['run', repoDir, 'hello@2', '--instance', 'published', '--cache', join(work, 'cache-pub'), '--publish', `127.0.0.1:${port}:8080`, '--until', 'HOSTME-NET eth0 10\\.0\\.2\\.15', '--timeout', '240', '--console', 'none'], { env, timeoutMs: 300_000 });
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stderr, /resumed hello@2 from its snapshot/);
});

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
