import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { packSmallImage, type SmallImage } from '../export/test-fixture.js';
import { parseImageLink } from '../runner/link.js';
import { startImage } from '../runner/run-image.js';
import { makeNoCloudSeed } from './nocloud.js';
import { sha256File } from '../export/hash.js';

let img: SmallImage;
before(async () => {
  img = await packSmallImage();
});
after(async () => {
  await img?.cleanup();
});

// One QEMU boot (TCG): the seed is attached after the image's disk, read-only, and the guest reads its CIDATA label.
test('run with extraDisks: the seed image is the guest\'s second disk, read-only, labelled CIDATA', { timeout: 300_000 }, async () => {
  const seed = join(img.dir, 'seed.img');
  await makeNoCloudSeed({ hostname: 'seeded' }, seed);
  const before = await sha256File(seed);
  const running = await startImage({
    link: parseImageLink(img.repoDir, img.name),
    cacheDir: join(img.dir, 'cache'),
    overlay: 'ephemeral',
    console: 'none',
    until: /HOSTME-READY/,
    keepRunning: true,
    timeoutMs: 180_000,
    extraDisks: [{ file: seed, readOnly: true }],
  });
  try {
    await running.vm.ready;
    // The seed reaches QEMU through hostme's NBD server and a gate (the disk caretaker), read-only; never as a file.
    const seedArg = running.vm.argv.find((a) => a.startsWith('{') && a.includes('"export":"extra-seed"'));
    assert.ok(seedArg, 'QEMU got the seed as an NBD blockdev');
    assert.ok(!running.vm.argv.some((a) => a.includes(seed)), 'QEMU was handed the seed file itself');
    assert.equal(JSON.parse(seedArg)['read-only'], true);
    const since = running.vm.consoleLength;
    running.vm.sendConsole('echo LABEL=$(dd if=/dev/nvme1n1 bs=1 skip=43 count=6 2>/dev/null)=END\n');
    const [line] = await running.vm.waitForConsole(/LABEL=\w*=END/, { since, timeoutMs: 60_000 });
    assert.equal(line, 'LABEL=CIDATA=END');
    // QEMU's NVMe device does not advertise write protection, so the guest may try: the write must fail.
    const since2 = running.vm.consoleLength;
    running.vm.sendConsole('dd if=/dev/zero of=/dev/nvme1n1 bs=4096 count=1 conv=fsync 2>/dev/null && echo WRITE=ok || echo WRITE=failed\n');
    const [write] = await running.vm.waitForConsole(/^WRITE=(ok|failed)(?=\r?$)/m, { since: since2, timeoutMs: 90_000 });
    assert.equal(write, 'WRITE=failed');
  } finally {
    await running.vm.shutdown();
    await running.finished;
  }
  assert.equal(await sha256File(seed), before, 'seed image unchanged');
});
