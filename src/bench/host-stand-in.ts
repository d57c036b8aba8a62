/**
 * bench:host's stand-in node (run as its own process): a real TunnelClient
 * whose "VM" is a plain Node HTTP server with the bench's two pages, so the
 * gateway's own cost is measured without an emulated guest in the way.
 * Prints {"direct": URL, "node": ID} once connected.
 */
import { createServer } from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { TunnelClient } from '../host/tunnel-client.js';

const hub = process.argv[2]!;
const big = Buffer.alloc(1 << 20);
for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
const small = Buffer.from(`<!doctype html><html><head><title>bench</title></head><body>${'<p>hello from the stand-in</p>'.repeat(20)}</body></html>`);
const server = createServer((req, res) => {
  const body = req.url === '/big.bin' ? big : small;
  res.writeHead(200, { 'content-type': req.url === '/big.bin' ? 'application/octet-stream' : 'text/html', 'content-length': body.length });
  res.end(body);
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const port = (server.address() as AddressInfo).port;
const tunnel = new TunnelClient(hub, generateKeyPairSync('ed25519'), { portOf: () => port, ready: () => ['web'], counted: () => {} }, (line) => process.stderr.write(`stand-in: ${line}\n`));
tunnel.update([{ site: 'web' }]);
process.stdout.write(`${JSON.stringify({ direct: `http://127.0.0.1:${port}`, node: tunnel.nodeId }, null, 2)}\n`);
process.on('SIGTERM', () => {
  tunnel.close();
  server.close();
  server.closeAllConnections();
});
