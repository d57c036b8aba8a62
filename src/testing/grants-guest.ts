/**
 * A real guest for the grants tests: QEMU (the test run's accelerator) with
 * an optional overlay NIC on a network served by a switch in the test's own
 * folder, the instance's control socket (hostme grant|revoke|grants) with
 * the caretakers the test hands it, a shell on its console, and the hostme
 * CLI bound to the test's cache. One fixture for the folder, disk, egress,
 * connect and runtime e2e tests (beside net-guest.ts, which boots plain
 * network guests).
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { attachGuest, overlayMac } from '../net/control.js';
import { launchVm, type VmDisk, type VmHandle } from '../vm/qemu.js';
import { main } from '../cli/main.js';
import { CacheDir } from '../runner/cache-dir.js';
import { serveGrantControl, type GrantControl } from '../grants/runtime.js';
import { loadReferenceGuest } from './reference-guest.js';
import { ConsoleGate, SCREEN_QEMU_ARGS, ScreenCaretaker } from '../grants/devices.js';

export interface GuestImage { kernel: string; initrd?: string; disk: string; cmdline: string; memoryMiB: number }

type ControlOptions = Omit<Parameters<typeof serveGrantControl>[0], 'instanceDir' | 'instance' | 'qmp'>;

export interface GrantsGuest {
  vm: VmHandle;
  instance: string;
  instanceDir: string;
  /** The guest's overlay address once DHCP answered (when `waitForAddress`). */
  ip?: string;
  /** The network's gateway address (the caretakers), when attached. */
  gateway?: string;
  control?: GrantControl;
  /** With `devices.console`: hostme's side of the console (what a user would see and type). */
  consoleGate?: ConsoleGate;
  /** Runs a command on the console: its output (after the echoed line) and exit status. */
  sh(command: string, timeoutMs?: number): Promise<{ out: string; rc: number }>;
  /** Stops the control socket and QEMU. */
  close(): Promise<void>;
}

export interface GrantsGuestOptions {
  /** The test's folder: the switch's state (net dir) and the VM's sockets. */
  work: string;
  /** The hostme cache whose instances/INSTANCE holds the control socket. */
  cache: string;
  instance: string;
  /** Default: the reference guest. */
  image?: GuestImage;
  /** Disks after the image's (read-only) root disk. */
  disks?: VmDisk[];
  /** Join this overlay network (the switch in `work`). */
  network?: { name: string; isolated?: boolean; services?: Array<{ port: number; socket: string }> };
  /** Serve the control socket with these caretakers (before the switch dials: a denied link never carries a frame). */
  control?: ControlOptions;
  /** Wait for the guest's DHCP line (HOSTME-NET eth0 IP); default: when a network is joined with the link up. */
  waitForAddress?: boolean;
  /** The console caretaker (a gate the test types through) and the screen's VGA adapter, granted or not. */
  devices?: { console?: boolean; screen?: boolean };
  /** Called with the VM as soon as it runs (to shut it down in after()). */
  onLaunch?: (vm: VmHandle) => void;
}

let marker = 0;

/** A shell on a VM's console: runs a command, returns what it printed (from the echoed line on) and its exit status. */
export function consoleShell(vm: VmHandle): GrantsGuest['sh'] {
  return async (command: string, timeoutMs = 60_000) => {
    const tag = `DONE-${++marker}`;
    const since = vm.consoleLength;
    vm.sendConsole(`${command}; echo ${tag} rc=$?\n`);
    const m = await vm.waitForConsole(new RegExp(`${tag} rc=(\\d+)`), { timeoutMs, since });
    return { out: vm.console.slice(-(vm.consoleLength - since)), rc: Number(m[1]) };
  };
}

export function grantsCli(cache: string, ...extra: string[]): (...args: string[]) => Promise<number> {
  return (...args: string[]) => main(['node', 'hostme', ...args, ...extra, '--cache', cache]);
}

export async function bootGrantsGuest(options: GrantsGuestOptions): Promise<GrantsGuest> {
  const image: GuestImage = options.image ?? loadReferenceGuest();
  const socket = path.join(options.work, `${options.instance}.sock`);
  const instanceDir = new CacheDir(options.cache).instanceDir(options.instance);
  await mkdir(instanceDir, { recursive: true });
  const vm = await launchVm({
    kernel: image.kernel, ...(image.initrd ? { initrd: image.initrd } : {}), cmdline: image.cmdline, memoryMiB: image.memoryMiB,
    disks: [{ file: image.disk, readOnly: true }, ...(options.disks ?? [])],
    cpus: 1, arch: 'x86_64', console: 'none', keepRunning: true,
    ...(options.devices?.screen !== undefined ? { extraArgs: [...SCREEN_QEMU_ARGS] } : {}),
    ...(options.network ? { overlay: { socket, mac: overlayMac(options.network.name, options.instance) } } : {}),
  });
  options.onLaunch?.(vm);
  const sh = consoleShell(vm);
  const guest: GrantsGuest = {
    vm, instance: options.instance, instanceDir, sh,
    close: async () => {
      await guest.control?.close();
      await vm.shutdown().catch(() => {});
    },
  };
  try {
    const devices = options.devices ?? {};
    if (devices.console !== undefined) guest.consoleGate = new ConsoleGate(vm, devices.console);
    const screen = devices.screen !== undefined ? new ScreenCaretaker(() => vm.screendump(), devices.screen, options.instance) : undefined;
    const caretakers = { ...(guest.consoleGate ? { console: guest.consoleGate } : {}), ...(screen ? { screen } : {}) };
    if (options.control) guest.control = await serveGrantControl({ instanceDir, instance: options.instance, qmp: vm.qmp, ...(options.network ? {} : { nic: false }), ...caretakers, ...options.control });
    if (options.network) {
      const { subnet } = await attachGuest({ dir: options.work, network: options.network.name, instance: options.instance, socket, isolated: options.network.isolated, services: options.network.services });
      guest.gateway = subnet.replace(/\.0\/\d+$/, '.1');
      if (options.waitForAddress ?? options.control?.net !== false) {
        const [, ip] = await vm.waitForConsole(/HOSTME-NET eth0 (\d+\.\d+\.\d+\.\d+)/, { timeoutMs: 300_000, since: 0 });
        guest.ip = ip;
      }
    }
    await vm.waitForConsole(/HOSTME-READY/, { timeoutMs: 300_000, since: 0 });
  } catch (err) {
    await guest.close();
    throw err;
  }
  return guest;
}
