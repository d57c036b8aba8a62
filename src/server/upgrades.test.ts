import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { upgradeRoutes } from './upgrades.js';

/** Sends an upgrade request; resolves with the 101 answer's path header, or 'closed'. */
function upgrade(port: number, path: string): Promise<string> {
  return new Promise((resolve) => {
    const req = request({ port, host: '127.0.0.1', path, headers: { Connection: 'Upgrade', Upgrade: 'test' } });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(String(res.headers['x-route']));
    });
    req.on('response', () => resolve('http response'));
    req.on('error', () => resolve('closed'));
    req.end();
  });
}

test('upgrade routes: handlers are asked in order, the first claim wins, unclaimed requests are closed, a removed handler is gone', async () => {
  const server = createServer((_req, res) => res.end('plain'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    const claim = (route: string, prefix: string) => (req: { url?: string }, socket: { end(s: string): void }) => {
      if (!(req.url ?? '').startsWith(prefix)) return false;
      socket.end(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\nX-Route: ${route}\r\n\r\n`);
      return true;
    };
    assert.equal(upgradeRoutes(server), upgradeRoutes(server), 'one list per server');
    upgradeRoutes(server).add(claim('hub', '/api/hub/'));
    const removeNet = upgradeRoutes(server).add(claim('net', '/net/'));
    upgradeRoutes(server).add(claim('greedy', '/'));
    assert.equal(await upgrade(port, '/api/hub/tunnel'), 'hub');
    assert.equal(await upgrade(port, '/net/demo'), 'net');
    assert.equal(await upgrade(port, '/other'), 'greedy');
    removeNet();
    assert.equal(await upgrade(port, '/net/demo'), 'greedy');
    const lone = createServer();
    const removeLone = upgradeRoutes(lone).add(claim('net', '/net/'));
    await new Promise<void>((resolve) => lone.listen(0, '127.0.0.1', resolve));
    try {
      assert.equal(await upgrade((lone.address() as AddressInfo).port, '/elsewhere'), 'closed', 'nobody claims it: closed, not left hanging');
    } finally {
      removeLone();
      assert.equal(lone.listenerCount('upgrade'), 0);
      lone.close();
    }
  } finally {
    server.close();
  }
});
