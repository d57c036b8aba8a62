import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { isHostmeError } from '../errors.js';
import { QmpClient } from './qmp.js';

/** A fake QMP server speaking just enough of the protocol. */
async function fakeServer(): Promise<{ socketPath: string; close: () => Promise<void> }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'hostme-qmp-test-'));
  const socketPath = path.join(dir, 'qmp.sock');
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.write(JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] } }) + '\r\n');
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl)) as { execute: string; id: string };
        buf = buf.slice(nl + 1);
        if (msg.execute === 'qmp_capabilities') s.write(JSON.stringify({ return: {}, id: msg.id }) + '\r\n');
        else if (msg.execute === 'query-status') {
          // an event first, then split the reply across two writes
          s.write(JSON.stringify({ event: 'RESUME', timestamp: { seconds: 1, microseconds: 2 } }) + '\r\n');
          const reply = JSON.stringify({ return: { status: 'running', running: true }, id: msg.id }) + '\r\n';
          s.write(reply.slice(0, 10));
          setTimeout(() => s.write(reply.slice(10)), 5);
        } else if (msg.execute === 'hang') {
          /* never answer */
        } else s.write(JSON.stringify({ error: { class: 'CommandNotFound', desc: `The command ${msg.execute} has not been found` }, id: msg.id }) + '\r\n');
      }
    });
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  return {
    socketPath,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

test('QMP client: greeting, commands, errors, events, close', async () => {
  const srv = await fakeServer();
  try {
    const qmp = await QmpClient.connect(srv.socketPath);
    assert.equal(qmp.greeting.version?.qemu?.major, 7);
    const event = qmp.waitForEvent('RESUME', 5000);
    const status = await qmp.execute<{ status: string }>('query-status');
    assert.equal(status.status, 'running');
    assert.equal((await event).event, 'RESUME');
    await assert.rejects(qmp.execute('no-such-command'), (err: unknown) => isHostmeError(err, 'qmp-error') && /not been found/.test(err.message));
    await assert.rejects(qmp.execute('hang', undefined, { timeoutMs: 50 }), (err: unknown) => isHostmeError(err, 'qmp-timeout'));
    const pending = qmp.execute('hang');
    await qmp.close();
    await assert.rejects(pending, (err: unknown) => isHostmeError(err, 'qmp-closed'));
    assert.equal(qmp.closed, true);
    await assert.rejects(qmp.execute('query-status'), (err: unknown) => isHostmeError(err, 'qmp-closed'));
  } finally {
    await srv.close();
  }
});

test('QMP client: connecting to nothing fails with qmp-failed', async () => {
  await assert.rejects(QmpClient.connect('/nonexistent/qmp.sock'), (err: unknown) => isHostmeError(err, 'qmp-failed'));
});
