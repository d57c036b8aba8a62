import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { bootGrantsGuest, grantsCli, type GrantsGuest } from '../testing/grants-guest.js';
import { isHostmeError } from '../errors.js';
import { controlGrants, readAudit } from './runtime.js';
import { publishedReferenceGuest, runCli } from '../testing/published-guest.js';

// One reference guest (real QEMU, TCG) with a VGA adapter and hostme's
// console gate: the screen and the console granted and revoked at runtime
// through the instance's control socket (hostme grant|revoke|screen).
const INSTANCE = 'seen';
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
let dir: string;
let cache: string;
let guest: GrantsGuest | undefined;

before(async () => {
  dir = await tempDir('hmdevices-');
  cache = await tempDir('hmdevices-cache-');
});
after(async () => {
  await guest?.close();
  await removeDir(dir);
  await removeDir(cache);
});

test('screen: refused while denied, a PNG once granted, refused again when revoked; console: revoked drops output and input, granted answers again', { timeout: 900_000 }, async () => {
  guest = await bootGrantsGuest({ work: dir, cache, instance: INSTANCE, devices: { console: true, screen: false }, control: { net: false } });
  const { vm, instanceDir } = guest;
  const gate = guest.consoleGate!;
  const cli = grantsCli(cache);
  const out = path.join(dir, 'screen.png');

  // The screen is denied: the adapter is there, the caretaker refuses.
  await assert.rejects(controlGrants(instanceDir, { op: 'screendump' }), (err) => isHostmeError(err, 'screen-denied') && /not granted to seen \(hostme grant seen screen\)/.test(err.message));
  assert.equal(await cli('screen', INSTANCE, '--out', out), 1);
  await assert.rejects(stat(out), /ENOENT/);

  assert.equal(await cli('grant', INSTANCE, 'screen'), 0);
  assert.equal(await cli('screen', INSTANCE, '--out', out), 0);
  const png = await readFile(out);
  assert.ok(png.length > PNG_SIGNATURE.length, `a PNG of ${png.length} bytes`);
  assert.deepEqual(png.subarray(0, PNG_SIGNATURE.length), PNG_SIGNATURE);

  assert.equal(await cli('revoke', INSTANCE, 'screen'), 0);
  await assert.rejects(controlGrants(instanceDir, { op: 'screendump' }), (err) => isHostmeError(err, 'screen-denied'));

  // The console, through hostme's gate: what a user of hostme sees and types.
  let seen = '';
  const stop = gate.onOutput((text) => { seen += text; });
  try {
    assert.equal(gate.send('echo A$((6*7))B\n'), true);
    await waitFor(() => seen.includes('A42B'), 'the granted console answers');

    assert.equal(await cli('revoke', INSTANCE, 'console'), 0);
    const since = vm.consoleLength;
    assert.equal(gate.send('echo C$((6*7))D\n'), false, 'typing into a revoked console is refused');
    // The guest's serial still works (hardware is stable): a line typed on the
    // hardware side is answered, in order after anything typed before it.
    vm.sendConsole('echo E$((6*7))F\n');
    await vm.waitForConsole(/E42F/, { timeoutMs: 60_000, since });
    assert.doesNotMatch(vm.console.slice(-(vm.consoleLength - since)), /C42D/, 'the dropped input never reached the guest');
    assert.doesNotMatch(seen, /E42F|E\$\(\(6\*7\)\)F/, 'output while revoked is dropped');

    assert.equal(await cli('grant', INSTANCE, 'console'), 0);
    assert.equal(gate.send('echo G$((6*7))H\n'), true);
    await waitFor(() => seen.includes('G42H'), 'the console answers again once granted');
    assert.doesNotMatch(seen, /E42F/, 'dropped output is not replayed');
  } finally {
    stop();
  }

  const status = await controlGrants(instanceDir, { op: 'status' });
  assert.deepEqual({ console: (status.granted as Record<string, unknown>).console, screen: (status.granted as Record<string, unknown>).screen }, { console: true, screen: false });
  const changes = (await readAudit(instanceDir)).filter((e) => e.op !== 'start' && (e.kind === 'screen' || e.kind === 'console')).map((e) => `${e.op} ${e.kind}`);
  assert.deepEqual(changes, ['grant screen', 'revoke screen', 'revoke console', 'grant console']);
});

test('hostme run shows the console on stdio, and with --deny-console shows none of it (the guest still runs to its ready mark)', { timeout: 600_000 }, async () => {
  const { repoDir } = await publishedReferenceGuest();
  const env = { HOSTME_CACHE_DIR: path.join(cache, 'run'), HOSTME_ACCEL: process.env.HOSTME_ACCEL ?? 'tcg' };
  const run = (...extra: string[]) => runCli(['run', repoDir, 'hello', '--instance', 'stdio', '--console', 'stdio', '--until', 'HOSTME-READY', '--timeout', '300', ...extra], { env, timeoutMs: 320_000 });
  const shown = await run();
  assert.equal(shown.code, 0, shown.stderr);
  assert.match(shown.stdout, /HOSTME-READY/);
  const silent = await run('--deny-console');
  assert.equal(silent.code, 0, silent.stderr);
  assert.doesNotMatch(silent.stdout, /HOSTME-READY/);
  assert.equal(silent.stdout, '', 'a denied console prints nothing of the guest');
});

/** Polls a condition (bounded); the guest's pace under TCG is not asserted. */
async function waitFor(condition: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  for (const end = Date.now() + timeoutMs; !condition();) {
    if (Date.now() > end) assert.fail(`${what}: not within ${timeoutMs / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
