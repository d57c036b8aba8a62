import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { removeDir, tempDir } from '../testing/fixtures.js';
import type { VmHandle } from '../vm/qemu.js';
import { bootNetGuest, guestShell, type NetGuest } from '../testing/net-guest.js';
import { controlRequest } from './control.js';
import type { Lease } from './registry.js';

// Two reference guests (real QEMU) on one overlay network, the switch a
// separate process started on demand: distinct addresses by DHCP, ping by
// address and by name, and the same addresses after the switch is killed and
// after a guest reboots.
let dir: string;
const vms: VmHandle[] = [];
const NETWORK = 'duo';

before(async () => {
  dir = await tempDir('hmnet-');
});

after(async () => {
  await Promise.all(vms.map((vm) => vm.shutdown().catch(() => {})));
  await controlRequest(dir, { op: 'stop' }).catch(() => {});
  await removeDir(dir);
});

function boot(instance: string, run: number): Promise<NetGuest> {
  return bootNetGuest({ work: dir, network: NETWORK, instance, join: { dir }, socketName: `${instance}-${run}.sock`, onLaunch: (vm) => vms.push(vm) });
}

const shell = guestShell;

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
