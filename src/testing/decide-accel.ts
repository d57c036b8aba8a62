/**
 * Decides the accelerator for a whole test run from one real boot of the
 * reference guest (scripts/test.sh exports the answer as HOSTME_ACCEL), so no
 * test depends on the luck of a probe: under KVM the launcher's watchdog
 * falls back to TCG when the guest shows no life, and the verdict is
 * remembered for the machine. Prints 'kvm' or 'tcg' on stdout, why on stderr.
 */
import { launchVm } from '../vm/qemu.js';
import { loadReferenceGuest } from './reference-guest.js';

const guest = loadReferenceGuest();
const vm = await launchVm({
  kernel: guest.kernel,
  cmdline: guest.cmdline,
  disks: [{ file: guest.disk, readOnly: true }],
  memoryMiB: guest.memoryMiB,
  cpus: guest.cpus,
  arch: guest.arch,
  console: 'none',
  until: /HOSTME-READY/,
  timeoutMs: 240_000,
  onNotice: (message) => process.stderr.write(`decide-accel: ${message}\n`),
});
await vm.ready;
await vm.exited;
process.stderr.write(`decide-accel: ${vm.accel} (${vm.accelReason})\n`);
process.stdout.write(`${vm.accel}\n`);
