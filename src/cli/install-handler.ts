import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { emit } from './output.js';
import { runTool } from '../process/tool.js';

/** The link schemes the HostMe button's "Run on my computer" uses (see src/runner/link.ts). */
export const HANDLED_SCHEMES = ['hostme+https', 'hostme+http', 'web+hostme'];
/** The `.hostme` reference file's content type (src/runner/reference-file.ts). */
export const HANDLED_TYPES = ['application/vnd.hostme.reference+json'];
const DESKTOP_FILE = 'hostme-handler.desktop';
/** shared-mime-info package: maps *.hostme to the reference type, so file managers know it. */
const MIME_PACKAGE = `<?xml version="1.0" encoding="UTF-8"?>
<mime-info xmlns="http://www.freedesktop.org/standards/shared-mime-info">
  <mime-type type="application/vnd.hostme.reference+json">
    <comment>HostMe reference</comment>
    <sub-class-of type="application/json"/>
    <glob pattern="*.hostme"/>
  </mime-type>
</mime-info>
`;

export function desktopEntry(command: string): string {
  return [
    '[Desktop Entry]',
    'Type=Application',
    'Name=hostme',
    'Comment=Run a virtual machine published on the web',
    `Exec=${command} %u`,
    'Terminal=true',
    'NoDisplay=true',
    `MimeType=${[...HANDLED_SCHEMES.map((s) => `x-scheme-handler/${s}`), ...HANDLED_TYPES].join(';')};`,
    '',
  ].join('\n');
}

/** Set our handler as the default for each scheme in a mimeapps.list, keeping everything else. */
export function withDefaults(existing: string, desktopFile: string): string {
  const lines = existing.split('\n').filter((l, i, all) => l !== '' || i < all.length - 1);
  const keys = new Set([...HANDLED_SCHEMES.map((s) => `x-scheme-handler/${s}`), ...HANDLED_TYPES]);
  const kept = lines.filter((l) => !keys.has(l.split('=')[0]!.trim()));
  let section = kept.indexOf('[Default Applications]');
  if (section < 0) {
    kept.push('[Default Applications]');
    section = kept.length - 1;
  }
  kept.splice(section + 1, 0, ...[...keys].map((k) => `${k}=${desktopFile}`));
  return kept.join('\n') + '\n';
}

export function registerInstallHandler(program: Command): void {
  program
    .command('install-handler')
    .description('register hostme+https://, hostme+http:// and web+hostme: links and .hostme reference files with the desktop (Linux, XDG), so "Run on my computer" opens hostme run')
    .option('--json', 'machine-readable output')
    .action(async (options: { json?: boolean }) => {
      const dataHome = process.env.XDG_DATA_HOME || join(homedir(), '.local', 'share');
      const configHome = process.env.XDG_CONFIG_HOME || join(homedir(), '.config');
      const bin = fileURLToPath(new URL('../../bin/hostme.js', import.meta.url));
      const command = `${quote(process.execPath)} ${quote(bin)} run`;
      const applications = join(dataHome, 'applications');
      await mkdir(applications, { recursive: true });
      const desktopPath = join(applications, DESKTOP_FILE);
      await writeFile(desktopPath, desktopEntry(command));
      await mkdir(configHome, { recursive: true });
      const mimeapps = join(configHome, 'mimeapps.list');
      await writeFile(mimeapps, withDefaults(await readFile(mimeapps, 'utf8').catch(() => ''), DESKTOP_FILE));
      const mimeDir = join(dataHome, 'mime');
      await mkdir(join(mimeDir, 'packages'), { recursive: true });
      await writeFile(join(mimeDir, 'packages', 'hostme.xml'), MIME_PACKAGE);
      // Refresh the desktop's caches when the tools are there; the files above are what counts.
      await runTool('update-desktop-database', [applications], { timeoutMs: 60_000 }).catch(() => undefined);
      await runTool('update-mime-database', [mimeDir], { timeoutMs: 60_000 }).catch(() => undefined);
      emit(options, { desktopFile: desktopPath, mimeapps, schemes: HANDLED_SCHEMES, types: HANDLED_TYPES }, () => `registered ${HANDLED_SCHEMES.join(', ')} links and ${HANDLED_TYPES.join(', ')} files: ${desktopPath} (defaults in ${mimeapps})`);
    });
}

function quote(text: string): string {
  return /^[\w/.+-]+$/.test(text) ? text : `"${text.replace(/(["\\`$])/g, '\\$1')}"`;
}
