import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { hostmeBin, runCli } from '../testing/published-guest.js';
import { NOFID, Reader, T, Writer } from '../folder/wire.js';

// The caretakers as plumbing: each started on its own as a hostme process
// (separate from the test), used over its unix socket with the real
// protocol (HTTP CONNECT; 9P2000.L from a client written here), and
// inspected with hostme caretaker status.
let dir: string;
const children: ChildProcess[] = [];
const servers: net.Server[] = [];

before(async () => { dir = await tempDir('hmcaretaker-'); });
after(async () => {
  for (const child of children) child.kill('SIGTERM');
  for (const server of servers) server.close();
  await removeDir(dir);
});

/** Starts `hostme caretaker ARGS --json` and resolves with its start status (one JSON document on stdout). */
async function start(args: string[]): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, [hostmeBin, 'caretaker', ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no start line within 60 s: ${err}`)), 60_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      try {
        const status = JSON.parse(out) as Record<string, unknown>;
        clearTimeout(timer);
        resolve(status);
      } catch { /* not complete yet */ }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`hostme caretaker exited ${code}: ${err}`)); });
  });
}

/** One CONNECT through the proxy's socket: the head of its answer and what followed. */
function connectThrough(socket: string, target: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const conn = net.connect(socket);
    let text = '';
    conn.setTimeout(20_000, () => conn.destroy(new Error('no answer')));
    conn.on('connect', () => conn.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`));
    conn.on('data', (d: Buffer) => { text += d.toString(); });
    conn.on('close', () => resolve(text));
    conn.on('error', reject);
  });
}

test('hostme caretaker egress: a CONNECT to the allowed host:port passes, another is 403; status shows both', { timeout: 120_000 }, async () => {
  const hello = net.createServer((s) => s.end('HELLO-THROUGH\n'));
  servers.push(hello);
  await new Promise<void>((resolve) => hello.listen(0, '127.0.0.1', resolve));
  const port = (hello.address() as net.AddressInfo).port;
  const socket = path.join(dir, 'egress.sock');
  const started = await start(['egress', '--socket', socket, '--allow', `127.0.0.1:${port}`]);
  assert.deepEqual(started.allowed, [`127.0.0.1:${port}`]);

  assert.match(await connectThrough(socket, `127.0.0.1:${port}`), /^HTTP\/1\.1 200[\s\S]*HELLO-THROUGH/);
  assert.match(await connectThrough(socket, `127.0.0.1:${port + 1 > 65535 ? 1 : port + 1}`), /^HTTP\/1\.1 403/);

  const status = await runCli(['caretaker', 'status', socket, '--json'], { timeoutMs: 60_000 });
  assert.equal(status.code, 0, status.stderr);
  const parsed = JSON.parse(status.stdout) as { caretaker: string; stats: { allowed: number; denied: number } };
  assert.equal(parsed.caretaker, 'egress');
  assert.equal(parsed.stats.allowed, 1);
  assert.equal(parsed.stats.denied, 1);
  const bad = await runCli(['caretaker', 'egress', '--socket', path.join(dir, 'x.sock'), '--allow', 'no-port'], { timeoutMs: 60_000 });
  assert.equal(bad.code, 2, bad.stderr);
  const none = await runCli(['caretaker', 'status', path.join(dir, 'nothing.sock')], { timeoutMs: 60_000 });
  assert.notEqual(none.code, 0);
  assert.match(none.stderr, /no caretaker answers/);
});

/** The 9P client: one request in flight, replies parsed with the project's wire reader. */
async function ninep(socket: string): Promise<{ ok(type: number, body: Writer): Promise<Reader>; errno(type: number, body: Writer): Promise<number>; close(): void }> {
  const conn = net.connect(socket);
  await new Promise((resolve, reject) => { conn.once('connect', resolve); conn.once('error', reject); });
  let buffer = Buffer.alloc(0);
  let waiting: ((m: Buffer) => void) | undefined;
  conn.on('data', (d: Buffer) => {
    buffer = Buffer.concat([buffer, d]);
    if (buffer.length >= 4 && buffer.length >= buffer.readUInt32LE(0)) {
      const size = buffer.readUInt32LE(0);
      const message = buffer.subarray(0, size);
      buffer = buffer.subarray(size);
      waiting?.(message);
    }
  });
  const call = (type: number, body: Writer) => new Promise<{ type: number; r: Reader }>((resolve) => {
    waiting = (m) => resolve({ type: m.readUInt8(4), r: new Reader(m.subarray(7)) });
    conn.write(body.message(type, 1));
  });
  return {
    ok: async (type, body) => {
      const { type: got, r } = await call(type, body);
      assert.equal(got, type + 1, got === T.Rlerror ? `Rlerror ${r.u32()}` : `reply ${got}`);
      return r;
    },
    errno: async (type, body) => {
      const { type: got, r } = await call(type, body);
      assert.equal(got, T.Rlerror);
      return r.u32();
    },
    close: () => conn.destroy(),
  };
}

test('hostme caretaker folder DIR --ro: a 9P client reads the file, writing is EACCES, .. is EACCES; status lists the export', { timeout: 120_000 }, async () => {
  const shared = path.join(dir, 'shared');
  await mkdir(shared);
  await writeFile(path.join(shared, 'hello.txt'), 'HELLO-9P\n');
  const socket = path.join(dir, '9p.sock');
  const started = await start(['folder', shared, '--ro', '--socket', socket]);
  assert.deepEqual(started.exports, [{ name: 'shared', path: shared, mode: 'ro' }]);

  const c = await ninep(socket);
  await c.ok(T.Tversion, new Writer().u32(8192).str('9P2000.L'));
  await c.ok(T.Tattach, new Writer().u32(0).u32(NOFID).str('me').str('shared').u32(0));
  await c.ok(T.Twalk, new Writer().u32(0).u32(1).u16(1).str('hello.txt'));
  await c.ok(T.Tlopen, new Writer().u32(1).u32(0));
  const r = await c.ok(T.Tread, new Writer().u32(1).u64(0).u32(4096));
  assert.equal(r.bytes(r.u32()).toString(), 'HELLO-9P\n');
  await c.ok(T.Twalk, new Writer().u32(0).u32(2).u16(1).str('hello.txt'));
  assert.equal(await c.errno(T.Tlopen, new Writer().u32(2).u32(1)), 13, 'open for writing');
  assert.equal(await c.errno(T.Twalk, new Writer().u32(0).u32(3).u16(1).str('..')), 13, 'walk to ..');

  const status = await runCli(['caretaker', 'status', socket, '--json'], { timeoutMs: 60_000 });
  assert.equal(status.code, 0, status.stderr);
  const parsed = JSON.parse(status.stdout) as { caretaker: string; connections: number };
  assert.equal(parsed.caretaker, 'folder');
  assert.equal(parsed.connections, 1);
  c.close();
  const both = await runCli(['caretaker', 'folder', shared, '--ro', '--rw', '--socket', path.join(dir, 'y.sock')], { timeoutMs: 60_000 });
  assert.equal(both.code, 2, both.stderr);
});
