import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { loadReferenceGuest, type ReferenceGuest } from '../testing/reference-guest.js';
import { launchVm, type VmHandle } from '../vm/qemu.js';
import { attachGuest, controlRequest, overlayMac } from './control.js';
import type { Lease } from './registry.js';

// Two reference guests (real QEMU, TCG) on one overlay network, the switch a
// separate process started on demand: distinct addresses by DHCP, ping by
// address and by name, and the same addresses after the switch is killed and
// after a guest reboots.
let dir: string;
let guest: ReferenceGuest;
const vms: VmHandle[] = [];
const NETWORK = 'duo';

before(async () => {
  guest = loadReferenceGuest();
  dir = await tempDir('hmnet-');
});

after(async () => {
  await Promise.all(vms.map((vm) => vm.shutdown().catch(() => {})));
  await controlRequest(dir, { op: 'stop' }).catch(() => {});
  await removeDir(dir);
});

async function boot(instance: string, run: number): Promise<{ vm: VmHandle; ip: string; name: string }> {
  const socket = path.join(dir, `${instance}-${run}.sock`);
  const vm = await launchVm({
    kernel: guest.kernel,
    cmdline: guest.cmdline,
    disks: [{ file: guest.disk, readOnly: true }],
    memoryMiB: guest.memoryMiB,
    cpus: 1,
    arch: 'x86_64',
    accel: 'tcg',
    console: 'none',
    keepRunning: true,
    overlay: { socket, mac: overlayMac(NETWORK, instance) },
  });
  vms.push(vm);
  await attachGuest({ dir, network: NETWORK, instance, socket });
  const [, ip, name] = await vm.waitForConsole(/HOSTME-NET eth0 (\d+\.\d+\.\d+\.\d+) (\S+)/, { timeoutMs: 240_000, since: 0 });
  await vm.waitForConsole(/HOSTME-READY/, { timeoutMs: 120_000, since: 0 });
  return { vm, ip: ip!, name: name! };
}

let marker = 0;
async function shell(vm: VmHandle, command: string, timeoutMs = 60_000): Promise<string> {
  const tag = `DONE-${++marker}`;
  const since = vm.consoleLength;
  vm.sendConsole(`${command}; echo ${tag} rc=$?\n`);
  const match = await vm.waitForConsole(new RegExp(`${tag} rc=(\\d+)`), { timeoutMs, since });
  const output = vm.console.slice(-(vm.consoleLength - since));
  assert.equal(match[1], '0', `${command} failed:\n${output}`);
  return output;
}

test('two guests get distinct addresses, ping each other by address and name, and keep them across a switch restart and a reboot', { timeout: 900_000 }, async () => {
  const [alpha, beta] = await Promise.all([boot('alpha', 1), boot('beta', 1)]);
  assert.notEqual(alpha.ip, beta.ip);
  assert.equal(alpha.name, `alpha.${NETWORK}.hostme`);
  assert.equal(beta.name, `beta.${NETWORK}.hostme`);

  await shell(alpha.vm, `ping -c 2 -W 5 ${beta.ip}`);
  const byName = await shell(alpha.vm, `ping -c 2 -W 5 beta.${NETWORK}.hostme`);
  assert.ok(byName.includes(beta.ip), byName);
  await shell(beta.vm, 'ping -c 1 -W 5 alpha'); // the search domain from DHCP option 15

  // Kill the switch process hard: the next attach starts a new one that dials both guests again.
  const { pid } = await controlRequest(dir, { op: 'ping' });
  process.kill(pid as number, 'SIGKILL');
  await new Promise((r) => setTimeout(r, 500));
  const gamma = await boot('gamma', 1);
  assert.ok(![alpha.ip, beta.ip].includes(gamma.ip));
  await shell(alpha.vm, `ping -c 2 -W 5 beta.${NETWORK}.hostme`);
  await shell(gamma.vm, `ping -c 1 -W 5 ${alpha.ip}`);

  // Beta reboots (a new QEMU, a new socket): same instance, same address.
  await beta.vm.shutdown();
  const beta2 = await boot('beta', 2);
  assert.equal(beta2.ip, beta.ip);
  await shell(beta2.vm, `ping -c 1 -W 5 alpha.${NETWORK}.hostme`);

  const leases = (await controlRequest(dir, { op: 'leases', network: NETWORK })).leases as Lease[];
  assert.deepEqual(leases.map((l) => [l.instance, l.ip]).sort(), [['alpha', alpha.ip], ['beta', beta.ip], ['gamma', gamma.ip]].sort());
});
