import { generateKeyPairSync, createPrivateKey, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

/** The node's home: $XDG_DATA_HOME/hostme/node (default ~/.local/share/hostme/node). */
export function defaultNodeHome(): string {
  return join(process.env.XDG_DATA_HOME ?? join(homedir(), '.local', 'share'), 'hostme', 'node');
}

export interface NodeHome {
  dir: string;
  /** SQLite site list. */
  dbFile: string;
  /** The runner's chunk cache and per-site instances (copy-on-write overlays). */
  cacheDir: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** Per-node secret the dashboard's own pages carry in state-changing POSTs. */
  secret: string;
  /** Pairing key a browser on the LAN presents once (then as a cookie) to use the node's LAN listener. */
  lanKey: string;
}

function readOrCreate(file: string, make: () => string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    const value = make();
    // wx: two processes starting at once keep one value.
    try {
      writeFileSync(file, value, { mode: 0o600, flag: 'wx' });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    return readFileSync(file, 'utf8');
  }
}

/** Opens (creating on first use) the node's home: identity key, secret, cache. */
export function openNodeHome(dir = defaultNodeHome()): NodeHome {
  const home = resolve(dir);
  mkdirSync(home, { recursive: true, mode: 0o700 });
  const pem = readOrCreate(join(home, 'node.key'), () => generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString());
  const privateKey = createPrivateKey(pem);
  const secret = readOrCreate(join(home, 'dashboard.secret'), () => randomBytes(32).toString('base64url')).trim();
  const lanKey = readOrCreate(join(home, 'lan.key'), () => randomBytes(32).toString('base64url')).trim();
  return { dir: home, dbFile: join(home, 'node.db'), cacheDir: join(home, 'cache'), privateKey, publicKey: createPublicKey(privateKey), secret, lanKey };
}
