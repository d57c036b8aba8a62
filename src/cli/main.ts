import { Command, CommanderError } from 'commander';
import { registerKeygen } from './keygen.js';
import { registerPack } from './pack.js';
import { registerVerify } from './verify.js';
import { registerInspect } from './inspect.js';
import { registerLs } from './ls.js';
import { registerRun } from './run.js';
import { registerProfile } from './profile.js';
import { registerSnapshot } from './snapshot.js';
import { registerInstanceCommands } from './instances.js';
import { registerServe } from './serve.js';
import { registerPush } from './push.js';
import { registerNbd } from './nbd.js';
import { registerExport } from './export.js';
import { registerSeed } from './seed.js';
import { registerBuild } from './build.js';
import { registerInstallHandler } from './install-handler.js';
import { reportError } from './output.js';

export function buildProgram(): Command {
  const program = new Command('hostme')
    .description('run virtual machines straight from the web')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({ writeErr: (text) => process.stderr.write(text) });
  registerKeygen(program);
  registerPack(program);
  registerBuild(program);
  registerVerify(program);
  registerInspect(program);
  registerLs(program);
  registerServe(program);
  registerPush(program);
  registerRun(program);
  registerNbd(program);
  registerExport(program);
  registerSeed(program);
  registerProfile(program);
  registerSnapshot(program);
  registerInstanceCommands(program);
  registerInstallHandler(program);
  return program;
}

/** Entry point: returns the process exit code (0 ok, 1 failure, 2 usage). */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    reportError(err, argv.includes('--json'));
    return 1;
  }
}
