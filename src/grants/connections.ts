/**
 * `hostme connect A B --port P` as part of each instance's state:
 * `connections.json` (mode 0600) in A's and B's instance folders lists the
 * connections the instance is part of, so `hostme grants` shows them whether
 * or not the instance runs. The switch keeps its own copy (connections.json
 * in its state folder) and applies it again after a restart.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

export interface Connection { from: string; to: string; port: number }

const MAX = 1024;

function file(instanceDir: string): string {
  return path.join(instanceDir, 'connections.json');
}

export async function readConnections(instanceDir: string): Promise<Connection[]> {
  const text = await readFile(file(instanceDir), 'utf8').catch(() => '[]');
  try {
    const parsed = JSON.parse(text) as unknown;
    return (Array.isArray(parsed) ? parsed : []).slice(0, MAX).filter((c): c is Connection =>
      typeof c?.from === 'string' && typeof c?.to === 'string' && Number.isInteger(c?.port));
  } catch {
    return [];
  }
}

/** Adds (on) or removes a connection in the instance's list; written atomically. */
export async function recordConnection(instanceDir: string, connection: Connection, on: boolean): Promise<void> {
  const same = (c: Connection) => c.from === connection.from && c.to === connection.to && c.port === connection.port;
  const list = (await readConnections(instanceDir)).filter((c) => !same(c));
  if (on) list.push(connection);
  const target = file(instanceDir);
  await writeFile(`${target}.tmp`, JSON.stringify(list.slice(-MAX), null, 1) + '\n', { mode: 0o600 });
  await rename(`${target}.tmp`, target);
}

export function describeConnection(c: Connection, self: string): string {
  return c.from === self ? `to ${c.to}:${c.port}` : `from ${c.from} on port ${c.port}`;
}
