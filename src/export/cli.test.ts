import assert from 'node:assert/strict';
import { readFile, readdir, writeFile } from 'node:fs/promises';
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

  test('interrupted (SIGTERM) during the conversion: qemu-img killed, no temporary files left', async () => {
    const to = join(img.dir, 'interrupted');
    const marker = join(img.dir, 'qemu-img-started');
    const fake = join(img.dir, 'fake-qemu-img');
    // A qemu-img that announces itself (its pid) and then hangs, so the signal surely arrives mid-conversion.
    await writeFile(fake, `#!/bin/sh\necho $$ > "${marker}.tmp" && mv "${marker}.tmp" "${marker}"\nexec sleep 600\n`, { mode: 0o755 });
    const run = runCli(['export', 'small', '--repo', img.repoDir, '--format', 'qcow2', '--to', to], { env: { HOSTME_QEMU_IMG: fake } });
    let pid = '';
    while (!(pid = await readFile(marker, 'utf8').catch(() => ''))) await new Promise((r) => setTimeout(r, 50));
    assert.equal((await readdir(to)).filter((f) => f.startsWith('.hostme-export-')).length, 1, 'work directory exists mid-export');
    run.kill('SIGTERM');
    const result = await run;
    assert.equal(result.code, 143);
    assert.match(result.stderr, /interrupted \(SIGTERM\); temporary files removed/);
    assert.deepEqual(await readdir(to), []);
    // Gone, or a zombie waiting for its new parent to reap it (it was SIGKILLed, not left running).
    const state = async () => (await readFile(`/proc/${pid.trim()}/stat`, 'utf8').catch(() => '')).replace(/^.*\) /s, '').charAt(0);
    for (let i = 0; i < 100 && !['', 'Z'].includes(await state()); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(['', 'Z'].includes(await state()), `the fake qemu-img was killed (state ${await state()})`);
  });

  test('unknown format and destination: exit 1, message lists the valid ones', async () => {
    const format = await runCli(['export', 'small', '--repo', img.repoDir, '--format', 'floppy', '--to', join(img.dir, 'x')]);
    assert.equal(format.code, 1);
    assert.match(format.stderr, /unknown export format "floppy"; valid formats: raw, qcow2, vmdk, vdi, vhd, vhdx, ova, vagrant, iso/);
    const dest = await runCli(['export', 'small', '--repo', img.repoDir, '--format', 'raw', '--to', 'ftp://host/x', '--json']);
    assert.equal(dest.code, 1);
    assert.equal(JSON.parse(dest.stdout).error.code, 'export-destination-unknown');
    const provider = await runCli(['export', 'small', '--repo', img.repoDir, '--format', 'vagrant', '--provider', 'vmware', '--to', join(img.dir, 'x')]);
    assert.equal(provider.code, 2, 'a usage error exits 2');
    assert.match(provider.stderr, /--provider must be libvirt or virtualbox/);
  });
});
