import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { HostmeError } from '../errors.js';
import { controlGrants } from '../grants/runtime.js';
import { CacheDir } from '../runner/cache-dir.js';

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** `hostme screen NAME --out FILE.png`: the running instance's screen, only while the screen is granted. */
export function registerScreen(program: Command): void {
  program
    .command('screen')
    .description("save a running instance's screen (its VGA adapter) as PNG; refused unless the screen is granted (hostme grant NAME screen)")
    .argument('<instance>', 'the instance name given to hostme run --instance')
    .requiredOption('--out <file>', 'the PNG file to write')
    .option('--cache <dir>', 'cache directory (default $HOSTME_CACHE_DIR or ~/.cache/hostme)')
    .action(async (instance: string, options: { out: string; cache?: string }) => {
      const dir = new CacheDir(options.cache).instanceDir(instance);
      const answer = await controlGrants(dir, { op: 'screendump' });
      const png = Buffer.from(typeof answer.png === 'string' ? answer.png : '', 'base64');
      if (png.length < PNG_SIGNATURE.length || !png.subarray(0, PNG_SIGNATURE.length).equals(PNG_SIGNATURE)) throw new HostmeError('grant-failed', `${instance} answered a screendump that is not a PNG`);
      await writeFile(options.out, png);
      process.stderr.write(`hostme: ${instance}'s screen saved to ${options.out} (${png.length} bytes)\n`);
    });
}
