import { createRequire } from 'node:module';
import path from 'node:path';

/**
 * Where this installation's v86 build and SeaBIOS live. The run page serves
 * these very files, and `hostme snapshot` boots them under Node, so a state
 * saved here loads in the page (v86 states load only into the same build).
 */
const require = createRequire(import.meta.url);

export const SEABIOS_DIR = process.env.HOSTME_SEABIOS_DIR ?? '/usr/share/seabios';

export function v86File(name: string): string {
  return path.join(path.dirname(require.resolve('v86')), name);
}

export function seabiosFile(name: 'bios.bin' | 'vgabios-stdvga.bin'): string {
  return path.join(SEABIOS_DIR, name);
}

/** The npm version of the installed v86 (e.g. "0.5.462+g5f9a90f"). */
export function v86PackageVersion(): string {
  try {
    return (require('v86/package.json') as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
