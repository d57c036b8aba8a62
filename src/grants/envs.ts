/**
 * Environments (porcelain over `hostme run --instance` and the grant set):
 * a named record of an image link and the grants it starts with, kept in
 * `<cache>/envs/NAME.json` (mode 0600). The instance of the same name holds
 * the environment's disk changes; its control socket makes it "running".
 */
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { HostmeError } from '../errors.js';
import { validateGrants, type GrantSet } from './grant-set.js';

export interface EnvRecord {
  name: string;
  /** The link and image name as given to hostme run. */
  link: string;
  image?: string;
  /** Folder paths absolute (resolved at create). */
  grants: GrantSet;
  /** The allowed root for folders when it was created (hostme env enter runs with it). */
  root: string;
  created: string;
}

const NAME = /^[a-z0-9][a-z0-9_.-]{0,63}$/;

export function checkEnvName(name: string): void {
  if (!NAME.test(name)) throw new HostmeError('usage', `environment "${name}": lowercase letters, digits, ".", "_" or "-", at most 64`);
}

export class EnvStore {
  constructor(readonly cacheRoot: string) {}

  get dir(): string {
    return path.join(this.cacheRoot, 'envs');
  }

  file(name: string): string {
    checkEnvName(name);
    return path.join(this.dir, `${name}.json`);
  }

  /** The grant set as a grant file (what `hostme env enter` passes to hostme run --grants). */
  grantsFile(name: string): string {
    checkEnvName(name);
    return path.join(this.dir, `${name}.grants.json`);
  }

  async create(record: EnvRecord): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    if (await this.get(record.name).catch(() => undefined)) throw new HostmeError('env-exists', `environment ${record.name} exists; hostme env rm ${record.name} first`, { env: record.name });
    const tmp = `${this.file(record.name)}.tmp`;
    await writeFile(tmp, JSON.stringify(record, null, 2) + '\n', { mode: 0o600 });
    await writeFile(this.grantsFile(record.name), JSON.stringify({ version: 1, ...record.grants }, null, 2) + '\n', { mode: 0o600 });
    await rename(tmp, this.file(record.name));
  }

  async get(name: string): Promise<EnvRecord> {
    let text: string;
    try {
      text = await readFile(this.file(name), 'utf8');
    } catch {
      throw new HostmeError('env-missing', `no environment ${name} (hostme env ls lists them)`, { env: name });
    }
    const record = JSON.parse(text) as EnvRecord;
    // Re-validated: the file is the user's, but it may have been edited by hand.
    record.grants = validateGrants({ version: 1, ...record.grants }, { base: '/', root: '/', source: this.file(name) });
    return record;
  }

  async list(): Promise<EnvRecord[]> {
    const names = (await readdir(this.dir).catch(() => [] as string[])).filter((f) => f.endsWith('.json') && !f.endsWith('.grants.json')).map((f) => f.slice(0, -5)).sort();
    const records: EnvRecord[] = [];
    for (const name of names) {
      if (NAME.test(name)) records.push(await this.get(name));
    }
    return records;
  }

  async remove(name: string): Promise<void> {
    await this.get(name);
    await rm(this.file(name), { force: true });
    await rm(this.grantsFile(name), { force: true });
  }
}
