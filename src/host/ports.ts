import { createServer } from 'node:net';

/**
 * A loopback TCP port that was free a moment ago (the OS picks it). QEMU
 * binds host forwards itself, so there is a small window in which another
 * process could take it; the supervisor retries a boot that fails on it.
 */
export async function freeLoopbackPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}
