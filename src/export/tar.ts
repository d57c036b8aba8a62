import { createReadStream, createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';

export interface TarMember {
  /** Name inside the archive. */
  name: string;
  /** Local file to copy in. */
  path: string;
}

/**
 * Writes a ustar archive of the given files in exactly this order (OVA needs
 * the .ovf first), optionally gzip-compressed (Vagrant boxes).
 */
export async function writeTar(outPath: string, members: TarMember[], options: { gzip?: boolean; mtime?: Date } = {}): Promise<void> {
  const pack = tar.pack();
  const mtime = options.mtime ?? new Date();
  const out = createWriteStream(outPath, { mode: 0o644 });
  const writing = options.gzip ? pipeline(pack, createGzip(), out) : pipeline(pack, out);
  const adding = (async () => {
    for (const member of members) {
      const { size } = await stat(member.path);
      await new Promise<void>((resolve, reject) => {
        const entry = pack.entry({ name: member.name, size, mode: 0o644, mtime, type: 'file' }, (err) => (err ? reject(err) : resolve()));
        createReadStream(member.path).on('error', reject).pipe(entry);
      });
    }
    pack.finalize();
  })();
  try {
    await Promise.all([writing, adding]);
  } catch (err) {
    pack.destroy(err as Error);
    throw err;
  }
}
