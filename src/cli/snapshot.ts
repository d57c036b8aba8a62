import type { Command } from 'commander';
import { QEMU_SNAPSHOT_DEFAULT_APPEND, QEMU_SNAPSHOT_DEFAULT_COMMAND, snapshotImage } from '../snapshot/index.js';
import { emit, formatBytes } from './output.js';
import { ProgressBar } from './progress.js';
import { bootOnceCommand, bootOnceRequest, type BootOnceOptions } from './boot-once.js';

export function registerSnapshot(program: Command): void {
  bootOnceCommand(
    program,
    'snapshot',
    'boot an image once (i686 in v86, x86_64 in QEMU), save the machine at the ready point and publish it as a new version that the browser (i686) or hostme run (x86_64) resumes instead of booting',
    'the ready point: save once the serial console matches this',
  )
    .option('--append <text>', 'x86_64: kernel arguments for the saved boot, whose disks are virtio-blk', QEMU_SNAPSHOT_DEFAULT_APPEND)
    .option('--guest-command <cmd>', 'x86_64: typed into the console before saving (empty: nothing)', QEMU_SNAPSHOT_DEFAULT_COMMAND)
    .option('--after-resume <cmd>', 'x86_64: typed into the console after every resume, {epoch} = host time in seconds, {nics} = NICs plugged in (default: set the clock, rerun /etc/hostme/rc.d/50-net; empty: nothing)')
    .action(async (spec: string, options: BootOnceOptions & { append: string; guestCommand: string; afterResume?: string }) => {
    const request = { ...(await bootOnceRequest(spec, options)), append: options.append, guestCommand: options.guestCommand, afterResume: options.afterResume };
    const name = request.name;
    const progress = new ProgressBar('snapshot');
    const started = performance.now();
    const timer = setInterval(() => progress.status(`${step} (${Math.round((performance.now() - started) / 1000)} s)`), 1000);
    let step = 'starting';
    try {
      const result = await snapshotImage({
        ...request,
        onStep: (_, detail) => {
          step = detail;
          progress.status(detail);
        },
      });
      clearInterval(timer);
      progress.done(); // before the summary, so it starts on a clean line
      emit(
        options,
        result,
        () =>
          `snapshot of ${name}@${result.baseVersion} at ${(result.msToReady / 1000).toFixed(1)} s into its boot: ${formatBytes(result.stateBytes)} of machine state, ` +
          `${formatBytes(result.storedBytes)} stored in ${result.chunks} chunks (${formatBytes(result.newStoredBytes)} new); published ${name}@${result.version} (${result.emulator})` +
          (result.workingSetChunks !== undefined ? `; RAM working set: ${result.workingSetChunks} chunks, fetched first by a resume` : '') +
          (result.workingSetSkipped ? `\nno RAM working set recorded: ${result.workingSetSkipped}` : ''),
      );
    } finally {
      clearInterval(timer);
      progress.done();
    }
  });
}
