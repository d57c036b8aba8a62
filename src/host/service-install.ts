import { mkdir, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const UNIT = 'hostme-host.service';
const DESKTOP = 'hostme-host.desktop';
const ICON = 'hostme-host.svg';
const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><rect width="64" height="64" rx="12" fill="#1d4ed8"/><path d="M14 34 32 16l18 18v16H38V38H26v12H14z" fill="#fff"/></svg>\n`;

function paths() {
  const config = process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config');
  const data = process.env.XDG_DATA_HOME ?? join(homedir(), '.local', 'share');
  return {
    unit: join(config, 'systemd', 'user', UNIT),
    autostart: join(config, 'autostart', DESKTOP),
    icon: join(data, 'icons', 'hicolor', 'scalable', 'apps', ICON),
  };
}

/** Quotes one argument for a systemd ExecStart / desktop Exec line. */
function quote(arg: string): string {
  return /^[A-Za-z0-9_./:=-]+$/.test(arg) ? arg : `"${arg.replace(/(["\\$`])/g, '\\$1')}"`;
}

/**
 * `hostme host --install`: a systemd user unit that runs the node (started
 * now if systemd is there, at login otherwise) and an XDG autostart entry
 * with an icon that opens the dashboard. Returns the files written.
 */
export async function installService(options: { home?: string }): Promise<string[]> {
  const p = paths();
  const bin = fileURLToPath(new URL('../../bin/hostme.js', import.meta.url));
  const argv = [process.execPath, bin, 'host', ...(options.home ? ['--home', resolve(options.home)] : [])].map(quote).join(' ');
  await mkdir(join(p.unit, '..'), { recursive: true });
  await writeFile(p.unit, `[Unit]\nDescription=HostMe node: hosts websites in VMs on this computer\nAfter=network-online.target\n\n[Service]\nExecStart=${argv}\nRestart=on-failure\nRestartSec=5\nKillSignal=SIGTERM\nTimeoutStopSec=30\n\n[Install]\nWantedBy=default.target\n`);
  await mkdir(join(p.icon, '..'), { recursive: true });
  await writeFile(p.icon, ICON_SVG);
  await mkdir(join(p.autostart, '..'), { recursive: true });
  // The autostart entry opens the dashboard (the node itself runs under systemd).
  await writeFile(p.autostart, `[Desktop Entry]\nType=Application\nName=HostMe node\nComment=Websites this computer hosts\nExec=xdg-open http://127.0.0.1:7480/\nIcon=${p.icon}\nTerminal=false\nCategories=Network;\nX-GNOME-Autostart-enabled=true\n`);
  return [p.unit, p.autostart, p.icon];
}

export async function uninstallService(): Promise<string[]> {
  const p = paths();
  const files = [p.unit, p.autostart, p.icon];
  await Promise.all(files.map((f) => rm(f, { force: true })));
  return files;
}
