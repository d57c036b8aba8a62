import { read as fsRead } from 'node:fs';

/** One positional read on a raw fd (callback fs.read: less per-call overhead than FileHandle.read). */
function preadOnce(fd: number, into: Uint8Array, at: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fsRead(fd, into, at, length, position, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

/** Fill `into` from `position`, looping over short reads; returns the bytes read (fewer only at end of file). */
export async function preadFully(fd: number, into: Uint8Array, position: number): Promise<number> {
  let done = 0;
  while (done < into.length) {
    const n = await preadOnce(fd, into, done, into.length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}
