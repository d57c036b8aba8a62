import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../store/node/dir-transport.js';
import { FormatError } from '../format/errors.js';
import type { PublisherKey } from '../format/node/keys.js';

type Pins = Record<string, string>;

/**
 * Trust on first use, like SSH known_hosts: the first verified manifest of an
 * image from a repository pins its publisher key; a later manifest signed by
 * another key is refused until the user forgets the pin on purpose.
 */
export class TrustPins {
  private readonly file: string;

  constructor(cacheRoot: string) {
    this.file = join(cacheRoot, 'trust.json');
  }

  async check(repo: string, name: string, signer: PublisherKey): Promise<'pinned' | 'matched'> {
    const pins = await this.load();
    const key = `${repo}#${name}`;
    const pinned = pins[key];
    if (pinned === signer.keyId) return 'matched';
    if (pinned) {
      throw new FormatError(
        'key-mismatch',
        `${name} from ${repo} is now signed by key ${signer.keyId.slice(0, 16)}, but key ${pinned.slice(0, 16)} was trusted before; refusing it. If the publisher really changed keys, run "hostme trust --forget ${name}"`,
        { repo, name, pinned, signer: signer.keyId },
      );
    }
    pins[key] = signer.keyId;
    await writeFileAtomic(this.file, new TextEncoder().encode(JSON.stringify(pins, null, 2) + '\n')).catch(() => {});
    return 'pinned';
  }

  async forget(name: string): Promise<number> {
    const pins = await this.load();
    const keys = Object.keys(pins).filter((k) => k.endsWith(`#${name}`));
    for (const key of keys) delete pins[key];
    await writeFileAtomic(this.file, new TextEncoder().encode(JSON.stringify(pins, null, 2) + '\n'));
    return keys.length;
  }

  private async load(): Promise<Pins> {
    const text = await readFile(this.file, 'utf8').catch(() => '{}');
    try {
      return JSON.parse(text) as Pins;
    } catch {
      return {};
    }
  }
}
