import type { Command } from 'commander';
import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import { chooseAccel, accelOverride, kvmDevice } from '../vm/accel.js';
import { machineIdentity, qemuVersion, rememberedVerdict, forgetVerdict, verdictFile } from '../vm/accel-verdict.js';
import { defaultQemuBinary, resolveQemuBinary } from '../vm/qemu-binary.js';
import { errorMessage } from '../errors.js';

interface DoctorOptions {
  json?: boolean;
  recheck?: boolean;
}

/** `hostme doctor`: what this machine offers hostme, and which accelerator a run will use and why. */
export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('show which accelerator (KVM or TCG) hostme runs will use and why, and what this machine has')
    .option('--recheck', 'forget the remembered KVM verdict: the next run probes and watches again')
    .option('--json', 'print as JSON')
    .action(async (options: DoctorOptions) => {
      const report = await diagnose(options.recheck === true);
      if (options.json) {
        process.stdout.write(JSON.stringify(report, null, 2) + '\n');
        return;
      }
      const lines = [
        `qemu:        ${report.qemu.binary ?? `missing (${report.qemu.error})`}`,
        `             ${report.qemuVersion}`,
        `             ${report.machine.qemu}`,
        `host kernel: ${report.machine.kernel}`,
        `cpu:         ${report.machine.cpu}`,
        `kvm device:  ${report.kvmDevice}`,
        `verdict:     ${report.verdict ? `${report.verdict.accel} (${report.verdict.evidence}, ${report.verdict.decidedAt}): ${report.verdict.reason}` : 'none remembered for this machine'} [${report.verdictFile}]`,
        `override:    ${report.override ?? 'none (HOSTME_ACCEL unset)'}`,
        `next run:    ${report.choice.accel}: ${report.choice.reason}${report.choice.provisional ? ' (a watchdog confirms it on the first real boot, falling back to TCG if the guest shows no life)' : ''}`,
      ];
      process.stdout.write(lines.join('\n') + '\n');
    });
}

async function diagnose(recheck: boolean) {
  const binaryName = process.env.HOSTME_QEMU ?? defaultQemuBinary('x86_64');
  const qemu = await resolveQemuBinary(binaryName).then(
    (binary) => ({ binary, error: undefined }),
    (err: unknown) => ({ binary: undefined, error: errorMessage(err) }),
  );
  const machine = await machineIdentity(qemu.binary ?? binaryName);
  if (recheck) await forgetVerdict(machine);
  const device = await fs.open(kvmDevice(), fsConstants.O_RDWR).then(
    async (fh) => {
      await fh.close();
      return 'present, opens read-write';
    },
    (err: unknown) => `not usable: ${errorMessage(err)}`,
  );
  const verdict = await rememberedVerdict(machine);
  const choice = await chooseAccel({ qemuBinary: qemu.binary ?? binaryName, fresh: true });
  return { qemu, qemuVersion: await qemuVersion(qemu.binary ?? binaryName), machine, kvmDevice: `${kvmDevice()}: ${device}`, verdict, verdictFile: verdictFile(), override: accelOverride(), choice: { accel: choice.accel, reason: choice.reason, source: choice.source, provisional: choice.provisional } };
}
