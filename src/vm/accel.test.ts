/**
 * The accelerator choice and the KVM watchdog, driven by faults we can force
 * on any machine: a wrapper around the real QEMU that, when asked for KVM,
 * runs the guest under TCG either normally ('ok': KVM that works), with its
 * CPUs never started ('hang': the probe guest passes but a real guest never
 * runs, what nested software-only KVM does to a real kernel) or not at all
 * ('fail': KVM that aborts at start).
 * A regular file stands in for /dev/kvm (HOSTME_KVM_DEVICE), so the verdict
 * path runs here whether or not the machine has KVM.
 */
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import { loadReferenceGuest, referenceGuestSpec, type ReferenceGuest } from '../testing/reference-guest.js';
import { publishedReferenceGuest, runCli } from '../testing/published-guest.js';
import { chooseAccel, resetAccelCache } from './accel.js';
import { machineIdentity, rememberVerdict, rememberedVerdict, verdictFile } from './accel-verdict.js';
import { consoleShowsLife, launchVm, type VmSpec } from './qemu.js';

const WRAPPER = `#!/usr/bin/env bash
# Stands in for a KVM whose behaviour the test picks with FAKE_KVM_MODE.
args=(); kvm=0; skip=0
for a in "$@"; do
  if [ "$skip" = 1 ]; then skip=0; continue; fi
  case "$a" in
    -cpu) skip=1 ;;                       # '-cpu host' exists only under KVM
    kvm) kvm=1; args+=(tcg) ;;
    *) args+=("$a") ;;
  esac
done
if [ "$kvm" = 1 ]; then
  case "$FAKE_KVM_MODE" in
    fail) echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x0 (forced by the test)" >&2; exit 1 ;;
    hang) [[ " $* " == *" -qmp "* ]] && args+=(-S) ;;   # the probe guest (no QMP) passes, real guests hang
  esac
fi
exec qemu-system-x86_64 "\${args[@]}"
`;

const saved = { ...process.env };
let dir: string;
let wrapper: string;

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'hostme-accel-test-'));
  // As root, QEMU (here: the wrapper) runs as an unprivileged user (vm/confine.ts): it must reach the wrapper.
  await chmod(dir, 0o711);
  wrapper = path.join(dir, 'qemu-fake-kvm');
  await writeFile(wrapper, WRAPPER);
  await chmod(wrapper, 0o755);
  await writeFile(path.join(dir, 'kvm-device'), '');
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});
/** Each test gets its own verdict file and the stand-in KVM device (hooks per suite: node 20 does not run root hooks for suites). */
function isolated(): void {
  beforeEach(isolate);
  afterEach(restore);
}

function isolate(): void {
  delete process.env.HOSTME_ACCEL;
  process.env.HOSTME_KVM_DEVICE = path.join(dir, 'kvm-device');
  process.env.HOSTME_ACCEL_VERDICT_FILE = path.join(dir, `verdicts-${Math.random().toString(36).slice(2)}.json`);
  resetAccelCache();
}

function restore(): void {
  for (const key of ['HOSTME_ACCEL', 'HOSTME_KVM_DEVICE', 'HOSTME_ACCEL_VERDICT_FILE', 'FAKE_KVM_MODE']) {
    if (saved[key] === undefined) delete process.env[key];
    else process.env[key] = saved[key];
  }
  resetAccelCache();
}

describe('chooseAccel', () => {
  isolated();
  test('HOSTME_ACCEL overrides everything, and a bad value is a clear error', async () => {
    process.env.HOSTME_ACCEL = 'tcg';
    assert.deepEqual(await chooseAccel({ qemuBinary: wrapper }), { accel: 'tcg', reason: 'override (HOSTME_ACCEL)', source: 'override', provisional: false });
    process.env.HOSTME_ACCEL = 'xen';
    await assert.rejects(chooseAccel({ qemuBinary: wrapper }), /HOSTME_ACCEL must be 'kvm' or 'tcg', not 'xen'/);
  });

  test('no usable KVM device means TCG, without a probe', async () => {
    process.env.HOSTME_KVM_DEVICE = path.join(dir, 'no-such-device');
    const choice = await chooseAccel({ qemuBinary: wrapper });
    assert.equal(choice.accel, 'tcg');
    assert.equal(choice.source, 'no-kvm');
    assert.match(choice.reason, /no-such-device not usable/);
  });

  test('a passing probe is provisional; a remembered verdict is used without probing', async () => {
    process.env.FAKE_KVM_MODE = 'ok';
    const first = await chooseAccel({ qemuBinary: wrapper });
    assert.equal(first.accel, 'kvm');
    assert.equal(first.source, 'probe');
    assert.equal(first.provisional, true);
    const machine = await machineIdentity(wrapper);
    assert.equal(await rememberedVerdict(machine), undefined, 'a probe pass alone is not remembered');

    await rememberVerdict({ accel: 'tcg', reason: 'test verdict', evidence: 'guest', machine });
    // A probe that would now fail proves the remembered answer is used without one.
    process.env.FAKE_KVM_MODE = 'fail';
    const second = await chooseAccel({ qemuBinary: wrapper, fresh: true });
    assert.equal(second.accel, 'tcg');
    assert.equal(second.source, 'remembered');
    assert.match(second.reason, /test verdict/);
  });

  test('a failing probe is remembered as TCG', async () => {
    process.env.FAKE_KVM_MODE = 'fail';
    const choice = await chooseAccel({ qemuBinary: wrapper });
    assert.equal(choice.accel, 'tcg');
    assert.equal(choice.source, 'probe');
    const verdict = await rememberedVerdict(await machineIdentity(wrapper));
    assert.equal(verdict?.accel, 'tcg');
    assert.equal(verdict?.evidence, 'probe');
  });

  test('a corrupt verdict file counts as no verdict', async () => {
    await writeFile(verdictFile(), '{ not json');
    process.env.FAKE_KVM_MODE = 'ok';
    assert.equal((await chooseAccel({ qemuBinary: wrapper })).source, 'probe');
  });
});

describe('consoleShowsLife', () => {
  test('boot-stub lines are no sign of life; kernel or userland output is', () => {
    assert.equal(consoleShowsLife(''), false);
    assert.equal(consoleShowsLife('Probing EDD (edd=off to disable)... ok\r\n'), false);
    assert.equal(consoleShowsLife('Probing ED'), false);
    assert.equal(consoleShowsLife('Decompressing Linux... Parsing ELF... done.\nBooting the kernel.\n'), false);
    assert.equal(consoleShowsLife('[    0.000000] Linux version 6.1.0\n'), true);
    assert.equal(consoleShowsLife('HOSTME-READY\n'), true);
    assert.equal(consoleShowsLife('HOSTME-READY'), true, 'an incomplete last line that is no boot-stub prefix counts');
  });
});

describe('the KVM watchdog (real QEMU, reference guest)', () => {
  isolated();
  let guest: ReferenceGuest;
  before(() => {
    guest = loadReferenceGuest();
  });
  const spec = (notices: string[], extra: Partial<VmSpec> = {}): VmSpec => ({
    ...referenceGuestSpec(guest),
    accel: undefined,
    until: /HOSTME-READY/,
    timeoutMs: 180_000,
    qemuBinary: wrapper,
    kvmWatchdogMs: 4000,
    onNotice: (message) => notices.push(message),
    ...extra,
  });

  test('a guest that shows no life under KVM is restarted under TCG, said once, and remembered', async () => {
    process.env.FAKE_KVM_MODE = 'hang';
    const notices: string[] = [];
    const vm = await launchVm(spec(notices));
    assert.equal(vm.accel, 'tcg');
    assert.match(vm.accelReason, /KVM fallback: the guest showed no sign of life under KVM within 4 s/);
    assert.equal(notices.length, 1);
    assert.match(notices[0]!, /no sign of life under KVM within 4 s \(no console output, no disk read\): starting the same boot under TCG/);
    assert.equal((await vm.ready).match, 'HOSTME-READY');
    await vm.exited;

    const verdict = await rememberedVerdict(await machineIdentity(wrapper));
    assert.equal(verdict?.accel, 'tcg');
    assert.equal(verdict?.evidence, 'guest');
    // The next launch decides from the verdict: no probe, no watchdog.
    const next = await chooseAccel({ qemuBinary: wrapper });
    assert.equal(next.source, 'remembered');
    assert.equal(next.accel, 'tcg');
  });

  test('QEMU dying at start under KVM falls back to TCG', async () => {
    process.env.HOSTME_ACCEL = 'kvm';
    process.env.FAKE_KVM_MODE = 'fail';
    const notices: string[] = [];
    const vm = await launchVm(spec(notices));
    assert.equal(vm.accel, 'tcg');
    assert.match(notices[0] ?? '', /QEMU could not start under KVM \(QEMU exited at start .*failed to set MSR 0x10a/);
    assert.equal((await vm.ready).match, 'HOSTME-READY');
    await vm.exited;
  });

  test('a guest alive under KVM stays there and KVM is remembered', async () => {
    process.env.FAKE_KVM_MODE = 'ok';
    const notices: string[] = [];
    // This guest's first console line comes seconds into the boot under TCG: give it time.
    const vm = await launchVm(spec(notices, { kvmWatchdogMs: 120_000 }));
    assert.equal(vm.accel, 'kvm');
    assert.deepEqual(notices, []);
    assert.equal((await vm.ready).match, 'HOSTME-READY');
    await vm.exited;
    const verdict = await rememberedVerdict(await machineIdentity(wrapper));
    assert.equal(verdict?.accel, 'kvm');
    assert.equal(verdict?.evidence, 'guest');
    const raw = JSON.parse(await readFile(verdictFile(), 'utf8')) as { version: number };
    assert.equal(raw.version, 1);
  });
});

describe('hostme run and hostme doctor', () => {
  test('a hanging KVM costs one watchdog, is said in one line, and the next run and doctor reuse the verdict', async () => {
    const published = await publishedReferenceGuest();
    const env = {
      HOSTME_ACCEL: '',
      HOSTME_QEMU: wrapper,
      HOSTME_KVM_DEVICE: path.join(dir, 'kvm-device'),
      HOSTME_ACCEL_VERDICT_FILE: path.join(dir, 'cli-verdicts.json'),
      HOSTME_KVM_WATCHDOG_MS: '4000',
      FAKE_KVM_MODE: 'hang',
    };
    const run = (cache: string) =>
      runCli(['run', published.repoDir, 'hello', '--cache', path.join(dir, cache), '--until', 'HOSTME-READY', '--timeout', '240', '--console', 'none', '--verbose'], { env });
    const first = await run('cache-1');
    assert.equal(first.code, 0, first.stderr);
    const fallbacks = first.stderr.split('\n').filter((line) => /starting the same boot under TCG/.test(line));
    assert.equal(fallbacks.length, 1, first.stderr);
    assert.match(first.stderr, /accel tcg\)/);
    assert.match(first.stderr, /accelerator tcg: KVM fallback/);
    assert.match(first.stderr, /ready [\d.]+ s/);

    const second = await run('cache-2');
    assert.equal(second.code, 0, second.stderr);
    assert.doesNotMatch(second.stderr, /starting the same boot under TCG/);
    assert.match(second.stderr, /accelerator tcg: remembered for this machine since .*: the guest showed no sign of life under KVM/);

    const doctor = await runCli(['doctor', '--json'], { env });
    assert.equal(doctor.code, 0, doctor.stderr);
    const report = JSON.parse(doctor.stdout) as { verdict: { accel: string; evidence: string }; choice: { accel: string; source: string } };
    assert.deepEqual([report.verdict.accel, report.verdict.evidence], ['tcg', 'guest']);
    assert.deepEqual([report.choice.accel, report.choice.source], ['tcg', 'remembered']);
    const text = await runCli(['doctor'], { env });
    assert.match(text.stdout, /next run: +tcg: remembered/);

    const recheck = await runCli(['doctor', '--recheck', '--json'], { env });
    const rechecked = JSON.parse(recheck.stdout) as { verdict?: unknown; choice: { accel: string; provisional: boolean } };
    assert.equal(rechecked.verdict, undefined);
    assert.deepEqual([rechecked.choice.accel, rechecked.choice.provisional], ['kvm', true], 'the probe passes again: KVM on trial');
  });
});
