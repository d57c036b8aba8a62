import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCli } from '../testing/published-guest.js';
import { packSmallImage, type SmallImage } from './test-fixture.js';

describe('hostme export CLI', () => {
  let img: SmallImage;
  before(async () => {
    img = await packSmallImage();
  });
  after(async () => {
    await img?.cleanup();
  });

  test('--json prints the summary on stdout, progress goes to stderr', async () => {
    const to = join(img.dir, 'out');
    const result = await runCli(['export', 'small@1', '--repo', img.repoDir, '--format', 'qcow2', '--compress', '--to', to, '--json']);
    assert.equal(result.code, 0, result.stderr);
    const summary = JSON.parse(result.stdout);
    assert.equal(summary.image, 'small@1');
    assert.equal(summary.format, 'qcow2');
    assert.equal(summary.files.length, 1);
    assert.equal(summary.files[0].url, join(to, 'small-1.qcow2'));
    assert.match(summary.files[0].sha256, /^[0-9a-f]{64}$/);
    assert.match(result.stderr, /converting to qcow2 \(compressed\)/);
    assert.deepEqual(await readdir(to), ['small-1.qcow2']);
  });

  test('human summary lists files, sizes and URLs', async () => {
    const to = join(img.dir, 'out2');
    const result = await runCli(['export', 'small', '--repo', img.repoDir, '--format', 'vdi', '--to', to]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^exported small@1 as vdi to /);
    assert.match(result.stdout, new RegExp(`${join(to, 'small-1.vdi').replace(/[.]/g, '\\.')}  [\\d.]+ MiB  sha256 [0-9a-f]{64}`));
  });

  test('unknown format and destination: exit 1, message lists the valid ones', async () => {
    const format = await runCli(['export', 'small', '--repo', img.repoDir, '--format', 'iso', '--to', join(img.dir, 'x')]);
    assert.equal(format.code, 1);
    assert.match(format.stderr, /unknown export format "iso"; valid formats: raw, qcow2, vmdk, vdi, vhd, vhdx, ova, vagrant/);
    const dest = await runCli(['export', 'small', '--repo', img.repoDir, '--format', 'raw', '--to', 'ftp://host/x', '--json']);
    assert.equal(dest.code, 1);
    assert.equal(JSON.parse(dest.stdout).error.code, 'export-destination-unknown');
    const provider = await runCli(['export', 'small', '--repo', img.repoDir, '--format', 'vagrant', '--provider', 'vmware', '--to', join(img.dir, 'x')]);
    assert.equal(provider.code, 1);
    assert.match(provider.stderr, /--provider must be libvirt or virtualbox/);
  });
});
