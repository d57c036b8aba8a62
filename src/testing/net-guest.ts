/**
 * A reference guest on an overlay network, for the network tests: QEMU
 * listens on a stream socket, the switch (on-demand, or a hub's) dials it,
 * and the guest prints "HOSTME-NET eth0 IP NAME" once DHCP answered.
 * The accelerator is the test run's (HOSTME_ACCEL, decided once by scripts/test.sh).
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { attachGuest, overlayMac } from '../net/control.js';
import { launchVm, type VmHandle } from '../vm/qemu.js';
import { loadReferenceGuest } from './reference-guest.js';

export interface NetGuest {
  vm: VmHandle;
  ip: string;
  name: string;
}

export async function bootNetGuest(options: {
  /** Directory for the guest's stream socket. */
  work: string;
  network: string;
  instance: string;
  /** How the switch is reached: its state dir, or a hub with a token. */
  join: { dir?: string; hub?: string; token?: string };
  /** Socket file name (default INSTANCE.sock): a rebooted guest needs a new one. */
  socketName?: string;
  /** Called with the VM as soon as it runs (to shut it down in after()). */
  onLaunch?: (vm: VmHandle) => void;
}): Promise<NetGuest> {
  const guest = loadReferenceGuest();
  const socket = path.join(options.work, options.socketName ?? `${options.instance}.sock`);
  const vm = await launchVm({
    kernel: guest.kernel,
    cmdline: guest.cmdline,
    disks: [{ file: guest.disk, readOnly: true }],
    memoryMiB: guest.memoryMiB,
    cpus: 1,
    arch: 'x86_64',
    console: 'none',
    keepRunning: true,
    overlay: { socket, mac: overlayMac(options.network, options.instance) },
  });
  options.onLaunch?.(vm);
  await attachGuest({ network: options.network, instance: options.instance, socket, ...options.join });
  // The whole line: a console chunk may end inside the name.
  const [, ip, name] = await vm.waitForConsole(/HOSTME-NET eth0 (\d+\.\d+\.\d+\.\d+) (\S+)\r?\n/, { timeoutMs: 240_000, since: 0 });
  await vm.waitForConsole(/HOSTME-READY/, { timeoutMs: 120_000, since: 0 });
  return { vm, ip: ip!, name: name! };
}

let marker = 0;

/** Runs a shell command on the guest's console; asserts it exited 0 and returns what it printed. */
export async function guestShell(vm: VmHandle, command: string, timeoutMs = 60_000): Promise<string> {
  const tag = `DONE-${++marker}`;
  const since = vm.consoleLength;
  vm.sendConsole(`${command}; echo ${tag} rc=$?\n`);
  const match = await vm.waitForConsole(new RegExp(`${tag} rc=(\\d+)`), { timeoutMs, since });
  const output = vm.console.slice(-(vm.consoleLength - since));
  assert.equal(match[1], '0', `${command} failed:\n${output}`);
  return output;
}
