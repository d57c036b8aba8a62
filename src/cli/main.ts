import { Command, CommanderError } from 'commander';
import { reportError } from './output.js';
import { exitStatusOf } from '../errors.js';

type Register = (program: Command) => void;

/**
 * Subcommand name -> its module, in help order. Loading every command's code
 * (YAML, JSON Schema, SQLite, tar, servers…) costs a few hundred ms at each
 * start, so `hostme run …` loads only the run command; help, --version and
 * unknown names load them all.
 */
const COMMANDS: Array<[names: string[], load: () => Promise<Register>]> = [
  [['keygen'], async () => (await import('./keygen.js')).registerKeygen],
  [['pack'], async () => (await import('./pack.js')).registerPack],
  [['build'], async () => (await import('./build.js')).registerBuild],
  [['verify'], async () => (await import('./verify.js')).registerVerify],
  [['inspect'], async () => (await import('./inspect.js')).registerInspect],
  [['ls'], async () => (await import('./ls.js')).registerLs],
  [['serve'], async () => (await import('./serve.js')).registerServe],
  [['push'], async () => (await import('./push.js')).registerPush],
  [['run'], async () => (await import('./run.js')).registerRun],
  [['nbd'], async () => (await import('./nbd.js')).registerNbd],
  [['export'], async () => (await import('./export.js')).registerExport],
  [['seed'], async () => (await import('./seed.js')).registerSeed],
  [['share'], async () => (await import('./share.js')).registerShare],
  [['profile'], async () => (await import('./profile.js')).registerProfile],
  [['net'], async () => (await import('./net.js')).registerNet],
  [['grant', 'revoke'], async () => (await import('./grant.js')).registerGrant],
  [['grants'], async () => (await import('./grants.js')).registerGrants],
  [['screen'], async () => (await import('./screen.js')).registerScreen],
  [['caretaker'], async () => (await import('./caretaker.js')).registerCaretaker],
  [['connect', 'disconnect'], async () => (await import('./connect.js')).registerConnect],
  [['env'], async () => (await import('./env.js')).registerEnv],
  [['snapshot'], async () => (await import('./snapshot.js')).registerSnapshot],
  [['reset', 'commit', 'cache', 'trust'], async () => (await import('./instances.js')).registerInstanceCommands],
  [['doctor'], async () => (await import('./doctor.js')).registerDoctor],
  [['host'], async () => (await import('./host.js')).registerHost],
  [['install-handler'], async () => (await import('./install-handler.js')).registerInstallHandler],
];

/** The program with every subcommand, or only `only`'s when it names one. */
export async function buildProgram(only?: string): Promise<Command> {
  const program = new Command('hostme')
    .description('run virtual machines straight from the web')
    .version('0.1.0')
    // Options after a subcommand's name are that subcommand's: `pack --version 1` is pack's version, not hostme's.
    .enablePositionalOptions()
    .exitOverride()
    .configureOutput({ writeErr: (text) => process.stderr.write(text) });
  const one = COMMANDS.find(([names]) => only !== undefined && names.includes(only));
  for (const [, load] of one ? [one] : COMMANDS) (await load())(program);
  return program;
}

/** Entry point: returns the process exit code (0 ok, 1 failure, 2 usage). */
export async function main(argv: string[]): Promise<number> {
  try {
    const program = await buildProgram(argv[2]);
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    reportError(err, argv.includes('--json'));
    return exitStatusOf(err);
  }
}
