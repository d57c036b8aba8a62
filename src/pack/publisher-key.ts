import { mkdir, readFile, writeFile, chmod } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { homedir } from 'node:os';
import { generatePublisherKey, parsePrivateKeyPem, parsePublicKeyLine, type PublisherKey } from '../format/node/keys.js';
import { HostmeError } from '../errors.js';

export function defaultKeyPath(): string {
  return process.env.HOSTME_KEY ?? join(process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'hostme', 'publisher.key');
}

/** Write KEYFILE (PKCS#8 PEM, mode 0600) and KEYFILE.pub. Refuses to overwrite. */
export async function createKeyFiles(path: string): Promise<{ keyId: string; publicPath: string }> {
  const key = generatePublisherKey();
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  try {
    await writeFile(path, key.privatePem, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new HostmeError('key-exists', `${path} already exists; refusing to overwrite a publisher key (delete it first if you mean it)`, { path });
    }
    throw err;
  }
  await chmod(path, 0o600);
  await writeFile(`${path}.pub`, key.publicLine, { mode: 0o644 });
  return { keyId: key.keyId, publicPath: `${path}.pub` };
}

export async function loadPrivateKey(path: string): Promise<PublisherKey> {
  const pem = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new HostmeError('key-unreadable', `${path}: cannot read the publisher key (${err.code ?? err.message}); create one with "hostme keygen ${path}"`, { path });
  });
  return parsePrivateKeyPem(pem, path);
}

/** The key given, or the default key, created on first use. */
export async function loadOrCreateDefaultKey(path?: string): Promise<{ key: PublisherKey; created: boolean; path: string }> {
  if (path) return { key: await loadPrivateKey(path), created: false, path };
  const fallback = defaultKeyPath();
  let created = false;
  try {
    await readFile(fallback);
  } catch {
    await createKeyFiles(fallback);
    created = true;
  }
  return { key: await loadPrivateKey(fallback), created, path: fallback };
}

/** Public key from a .pub file, or from a private key file. */
export async function loadPublicKey(path: string): Promise<PublisherKey> {
  const text = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new HostmeError('key-unreadable', `${path}: cannot read the key (${err.code ?? err.message})`, { path });
  });
  if (text.includes('PRIVATE KEY')) {
    const key = parsePrivateKeyPem(text, path);
    return { keyId: key.keyId, publicKeyRaw: key.publicKeyRaw };
  }
  return parsePublicKeyLine(text, path);
}
