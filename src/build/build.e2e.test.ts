/**
 * hostme build end to end: the examples built from Debian packages (apt-get
 * download into .cache/build), checked for reproducibility, and booted under
 * QEMU (few boots: each is several seconds under TCG).
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildImage, type BuildResult } from './index.js';
import { openRepository } from '../repo/repository.js';
import { startImage } from '../runner/run-image.js';
import { launchVm } from '../vm/qemu.js';
import { newKey, readBlob, removeDir, run, tempDir } from '../testing/fixtures.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const example = (name: string) => path.join(repoRoot, 'examples', name, 'hostme.json');
const cacheDir = path.join(repoRoot, '.cache', 'build');
const key = newKey();

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('hostme build examples', () => {
  let dir: string;
  const build = (manifest: string, repo: string, inputs: Record<string, unknown>, work: string): Promise<BuildResult> =>
    buildImage({ manifestPath: example(manifest), inputs, repoDir: path.join(dir, repo), key, workDir: path.join(dir, work), cacheDir });

  /** Writes an image's disk (and kernel) from the repository to files for launchVm. */
  async function materialize(repoName: string, name: string) {
    const repo = openRepository(path.join(dir, repoName));
    const { manifest } = await repo.loadImage(name, undefined);
    const disk = path.join(dir, `${name}.raw`);
    await writeFile(disk, (await readBlob(repo, manifest.disks[0]!)).data);
    let kernel: string | undefined;
    if (manifest.boot.mode === 'direct') {
      kernel = path.join(dir, `${name}.vmlinux`);
      await writeFile(kernel, (await readBlob(repo, manifest.boot.kernel)).data);
    }
    return { manifest, disk, kernel, cmdline: manifest.boot.mode === 'direct' ? manifest.boot.cmdline : undefined };
  }

  before(async () => {
    dir = await tempDir('hostme-build-e2e-');
  });
  after(() => removeDir(dir));

  test('examples/hello builds reproducibly and the rebuild reuses every chunk', async () => {
    const first = await build('hello', 'repo', { hostname: 'xyz' }, 'work1');
    const second = await build('hello', 'repo', { hostname: 'xyz' }, 'work2');
    assert.equal(second.diskSha256, first.diskSha256, 'same inputs, same disk bytes');
    assert.equal(second.pack.newChunks, 0, 'nothing new to store');
    const repo = openRepository(path.join(dir, 'repo'));
    const other = await build('hello', 'repo-other', { hostname: 'xyz' }, 'work3');
    const [a, b] = [await repo.loadImage('hello', '1'), await openRepository(path.join(dir, 'repo-other')).loadImage('hello', '1')];
    assert.equal(b.manifest.disks[0]!.index, a.manifest.disks[0]!.index, 'same disk index id');
    assert.equal(other.diskSha256, first.diskSha256);
    assert.equal(a.manifest.boot.mode, 'direct');
    assert.equal(a.manifest.hardware.memoryMiB, 256);
  });

  test('examples/hello boots from the repository to HOSTME-READY with the hostname input', async () => {
    const running = await startImage({ link: { repo: path.join(dir, 'repo'), name: 'hello' }, cacheDir: path.join(dir, 'run-cache'), console: 'none', until: /HOSTME-READY/, timeoutMs: 180_000 });
    await running.vm.ready;
    assert.match(running.vm.console, /hostname: xyz\r?\n/);
    await running.finished;
  });

  test('--seed bakes a cloud-init NoCloud seed into the image', async () => {
    await buildImage({
      manifestPath: example('hello'),
      inputs: { hostname: 'seeded' },
      repoDir: path.join(dir, 'repo-seed'),
      key,
      workDir: path.join(dir, 'work-seed'),
      cacheDir,
      seed: { hostname: 'seeded-host', instanceId: 'iid-e2e', network: { address: '10.0.2.15/24', gateway: '10.0.2.2', dns: ['10.0.2.3'] } },
    });
    const { disk } = await materialize('repo-seed', 'hello');
    const cat = async (file: string) => (await run('debugfs', ['-R', `cat ${file}`, disk])).stdout;
    assert.match(await cat('/var/lib/cloud/seed/nocloud/meta-data'), /instance-id: iid-e2e[\s\S]*local-hostname: seeded-host/);
    assert.match(await cat('/var/lib/cloud/seed/nocloud/network-config'), /10\.0\.2\.15\/24/);
    assert.match(await cat('/var/lib/cloud/seed/nocloud/user-data'), /^#cloud-config/);
  });

  test('examples/web serves its templated page over HTTP through a host forward', async () => {
    await build('web', 'repo-web', { title: 'Built by the e2e test' }, 'work-web');
    const { disk, kernel, cmdline, manifest } = await materialize('repo-web', 'web');
    const port = await freePort();
    const vm = await launchVm({
      kernel,
      cmdline,
      disks: [{ file: disk }],
      memoryMiB: manifest.hardware.memoryMiB,
      cpus: 1,
      arch: 'x86_64',
      console: 'none',
      until: /HOSTME-READY/,
      keepRunning: true,
      timeoutMs: 180_000,
      netdev: { hostfwd: [{ hostPort: port, guestPort: 80 }] },
    });
    try {
      await vm.ready;
      assert.match(vm.console, /web: serving \/www on port 80/, vm.console.slice(-2000));
      const response = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(60_000) });
      assert.equal(response.status, 200);
      const body = await response.text();
      assert.match(body, /<h1>Built by the e2e test<\/h1>/);
    } finally {
      await vm.shutdown();
    }
  });

  test('examples/bios makes a BIOS-bootable disk that boots through SeaBIOS and syslinux', async () => {
    const first = await build('bios', 'repo-bios', {}, 'work-bios');
    const again = await build('bios', 'repo-bios-2', {}, 'work-bios-2');
    assert.equal(again.diskSha256, first.diskSha256, 'the partitioned disk (MBR, FAT, syslinux, ext4) is reproducible too');
    const { disk, manifest } = await materialize('repo-bios', 'hello-bios');
    assert.equal(manifest.boot.mode, 'firmware');
    const vm = await launchVm({ firmwareBoot: true, disks: [{ file: disk }], memoryMiB: 256, cpus: 1, arch: 'x86_64', console: 'none', until: /HOSTME-READY/, timeoutMs: 240_000 });
    await vm.ready;
    assert.match(vm.console, /hostname: hello-bios\r?\n/);
    await vm.exited;
  });
});
