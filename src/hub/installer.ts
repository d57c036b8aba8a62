import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';

/** Where the hub serves the hostme package (npm pack output) given with --package. */
export const PACKAGE_PATH = '/hostme.tgz';
export const INSTALL_PATH = '/install.sh';

/**
 * /install.sh: installs hostme for the current user from this hub's
 * package (user-level npm prefix, no sudo), says which Debian packages are
 * missing, registers the link/file handler and offers the node service.
 * `origin` is the hub's public origin; it is quoted, never interpolated raw.
 */
export function installScript(origin: string): string {
  const quoted = `'${origin.replace(/'/g, `'\\''`)}'`;
  return `#!/bin/sh
# HostMe installer, served by the hub at ${INSTALL_PATH}:  curl -fsSL HUB${INSTALL_PATH} | sh
set -eu
HUB=\${HOSTME_HUB:-${quoted}}
PREFIX=\${HOSTME_PREFIX:-"$HOME/.local"}
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "hostme needs Node.js 20 or newer and npm: sudo apt-get install nodejs npm" >&2
  exit 1
fi
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "hostme needs Node.js 20 or newer (this is $(node --version))" >&2
  exit 1
fi
echo "installing hostme from $HUB into $PREFIX (no sudo)"
npm install --global --prefix "$PREFIX" "$HUB${PACKAGE_PATH}"
missing=""
for tool in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils; do
  command -v "\${tool%%:*}" >/dev/null 2>&1 || missing="$missing \${tool#*:}"
done
if [ -n "$missing" ]; then
  echo "hostme runs VMs with QEMU; install it with: sudo apt-get install$missing qemu-block-extra" >&2
fi
"$PREFIX/bin/hostme" install-handler || echo "install-handler failed; links will not open hostme" >&2
case ":$PATH:" in *":$PREFIX/bin:"*) ;; *) echo "add $PREFIX/bin to your PATH" ;; esac
echo "done. To host websites on this computer (starts at login): $PREFIX/bin/hostme host --install"
`;
}

/** Serves /install.sh and /hostme.tgz; false for other paths. */
export async function handleInstaller(req: IncomingMessage, res: ServerResponse, origin: string, packageFile: string | undefined): Promise<boolean> {
  const path = (req.url ?? '').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  if (path === INSTALL_PATH) {
    const body = installScript(origin);
    res.writeHead(200, { 'Content-Type': 'text/x-shellscript; charset=utf-8', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-cache' });
    res.end(req.method === 'HEAD' ? undefined : body);
    return true;
  }
  if (path === PACKAGE_PATH && packageFile) {
    const info = await stat(packageFile);
    res.writeHead(200, { 'Content-Type': 'application/gzip', 'Content-Length': info.size, 'Content-Disposition': 'attachment; filename="hostme.tgz"' });
    if (req.method === 'HEAD') res.end();
    else createReadStream(packageFile).pipe(res);
    return true;
  }
  return false;
}
