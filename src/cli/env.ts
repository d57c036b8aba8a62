import { rm } from 'node:fs/promises';
import type { Command } from 'commander';
import { EnvStore, checkEnvName } from '../grants/envs.js';
import { describeGrants, grantRoot } from '../grants/grant-set.js';
import { controlGrants } from '../grants/runtime.js';
import { CacheDir } from '../runner/cache-dir.js';
import { parseImageLink } from '../runner/link.js';
import { HostmeError, isHostmeError } from '../errors.js';
import { addGrantOptions, grantsOf } from './run-grants.js';
import { terminalSafe } from './output.js';

/**
 * `hostme env create|ls|enter|rm`: named environments, like schroot over
 * debootstrap: create records an image and the grants it starts with (deny
 * by default, validated now), enter runs it with them (a console; changes
 * kept in the instance of the same name), rm forgets both.
 */
export function registerEnv(program: Command): void {
  const env = program.command('env').description('named environments: an image and the grants it runs with (docs/grants.md)');
  const cacheOption = ['--cache <dir>', 'cache directory (default $HOSTME_CACHE_DIR or ~/.cache/hostme)'] as const;

  addGrantOptions(
    env
      .command('create')
      .description('record an environment (nothing starts); grants as for hostme run, nothing granted by default')
      .argument('<name>', 'environment name')
      .requiredOption('--from <link>', 'the image: any link hostme run takes')
      .option('--image <name>', 'image name when the link is a repository')
      .option(...cacheOption),
  ).action(async (name: string, options: Record<string, unknown>) => {
    checkEnvName(name);
    const link = String(options.from);
    const image = options.image as string | undefined;
    if (!/^(https?|hostme\+https?):\/\//.test(link)) parseImageLink(link, image);
    const { set } = await grantsOf(options);
    // env enter is a console: granted unless --deny-console (hostme revoke NAME console takes it while it runs).
    if (options.denyConsole === undefined) set.console = true;
    const store = new EnvStore(new CacheDir(options.cache as string | undefined).root);
    await store.create({ name, link, ...(image ? { image } : {}), grants: set, root: grantRoot(), created: new Date().toISOString() });
    process.stdout.write(`environment ${name} from ${terminalSafe(link)}\n${describeGrants(set).map((l) => `  ${l}`).join('\n')}\nstart it with: hostme env enter ${name}\n`);
  });

  env
    .command('ls')
    .description('the environments, running or not, and their grants')
    .option(...cacheOption)
    .option('--json', 'print JSON')
    .action(async (options: { cache?: string; json?: boolean }) => {
      const cache = new CacheDir(options.cache);
      const records = await new EnvStore(cache.root).list();
      const rows = await Promise.all(records.map(async (r) => ({ ...r, running: await running(cache, r.name) })));
      if (options.json) return void process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
      if (rows.length === 0) return void process.stdout.write('no environments (hostme env create NAME --from LINK)\n');
      for (const r of rows) {
        process.stdout.write(`${r.name}  ${r.running ? 'running' : 'stopped'}  ${terminalSafe(r.link)}${r.image ? ` ${terminalSafe(r.image)}` : ''}\n`);
        for (const line of describeGrants(r.grants)) process.stdout.write(`  ${terminalSafe(line)}\n`);
      }
    });

  env
    .command('enter')
    .description('run the environment with its grants (console on this terminal; hostme grant/revoke change it while it runs)')
    .argument('<name>', 'environment name')
    .option(...cacheOption)
    .option('--console <mode>', 'stdio or none', process.stdin.isTTY ? 'stdio' : 'none')
    .option('--until <regex>', 'stop once the console prints a match')
    .option('--timeout <seconds>', 'give up after this many seconds')
    .option('--yes', 'grant what the image asks beyond the environment\'s grants')
    .action(async (name: string, options: { cache?: string; console: string; until?: string; timeout?: string; yes?: boolean }) => {
      const cache = new CacheDir(options.cache);
      const store = new EnvStore(cache.root);
      const record = await store.get(name);
      if (await running(cache, name)) throw new HostmeError('env-running', `environment ${name} is running already`, { env: name });
      const { main } = await import('./main.js');
      // Folders were checked against the root of the directory the environment was created in.
      process.env.HOSTME_GRANT_ROOT = record.root;
      const args = ['node', 'hostme', 'run', record.link, ...(record.image ? [record.image] : []), '--instance', name, '--grants', store.grantsFile(name), '--cache', cache.root, '--console', options.console];
      if (options.until) args.push('--until', options.until);
      if (options.timeout) args.push('--timeout', options.timeout);
      if (options.yes) args.push('--yes');
      const code = await main(args);
      if (code !== 0) throw new HostmeError('env-exit', `environment ${name} ended with an error (exit ${code})`, { env: name });
    });

  env
    .command('rm')
    .description('forget an environment and delete its changes (its instance)')
    .argument('<name>', 'environment name')
    .option(...cacheOption)
    .action(async (name: string, options: { cache?: string }) => {
      const cache = new CacheDir(options.cache);
      const store = new EnvStore(cache.root);
      await store.get(name);
      if (await running(cache, name)) throw new HostmeError('env-running', `environment ${name} is running; stop it first`, { env: name });
      await store.remove(name);
      await rm(cache.instanceDir(name), { recursive: true, force: true });
      process.stderr.write(`hostme: environment ${name} removed\n`);
    });
}

async function running(cache: CacheDir, name: string): Promise<boolean> {
  return controlGrants(cache.instanceDir(name), { op: 'status' }).then(
    () => true,
    (err: unknown) => {
      if (isHostmeError(err, 'instance-not-running')) return false;
      throw err;
    },
  );
}
