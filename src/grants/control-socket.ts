/**
 * The line protocol of hostme's local control sockets (an instance's
 * `grants.sock`, a standalone caretaker's `SOCKET.ctl`): one JSON request
 * line, one JSON answer line, then the server closes. The socket is mode 0600
 * (only its owner may change grants); a request over 4 KiB is refused.
 */
import { chmod, rm } from 'node:fs/promises';
import net from 'node:net';

const MAX_REQUEST = 4096;

export interface ControlSocket {
  close(): Promise<void>;
}

/**
 * Serves `socketPath`: `handle` gets the request line and returns the answer.
 * A client has 5 s to send its line; once it is in, the answer may take
 * `answerTimeoutMs` (a screendump's time for an instance).
 */
export async function listenControl(socketPath: string, handle: (line: string) => Promise<unknown>, options: { answerTimeoutMs?: number } = {}): Promise<ControlSocket> {
  await rm(socketPath, { force: true });
  const server = net.createServer((conn) => {
    let buffer = '';
    conn.setTimeout(5000, () => conn.destroy());
    conn.on('error', () => {});
    conn.on('data', (chunk) => {
      buffer += chunk.toString('utf8');
      if (buffer.length > MAX_REQUEST) return void conn.end(JSON.stringify({ ok: false, code: 'usage', message: 'request too long' }) + '\n');
      const nl = buffer.indexOf('\n');
      if (nl < 0) return;
      conn.pause();
      conn.setTimeout(options.answerTimeoutMs ?? 5000);
      void handle(buffer.slice(0, nl)).then((answer) => conn.end(JSON.stringify(answer) + '\n'));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  await chmod(socketPath, 0o600);
  return {
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(socketPath, { force: true });
    },
  };
}

/** Sends one request and returns the raw answer text (rejects on no answer within `waitMs` or an answer over `maxAnswer` characters). */
export function askControl(socketPath: string, request: unknown, options: { waitMs: number; maxAnswer: number }): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const conn = net.connect(socketPath);
    let text = '';
    conn.setTimeout(options.waitMs, () => conn.destroy(new Error(`no answer within ${options.waitMs / 1000} s`)));
    conn.on('connect', () => conn.write(JSON.stringify(request) + '\n'));
    conn.on('data', (chunk) => {
      text += chunk.toString('utf8');
      if (text.length > options.maxAnswer) conn.destroy(new Error('answer too long'));
    });
    conn.on('end', () => resolve(text));
    conn.on('error', reject);
  });
}
