import assert from 'node:assert/strict';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { pseudoRandom, removeDir, tempDir } from '../testing/fixtures.js';
import { FolderServer, MAX_MSIZE } from './server.js';
import { NOFID, QT_SYMLINK, Reader, T, Writer } from './wire.js';

// The 9P2000.L server against a client written here from the protocol
// (one request in flight), over its real unix socket.
let dir: string;
let server: FolderServer;
const EACCES = 13;
const ELOOP = 40;

before(async () => {
  dir = await tempDir('hm9p-');
  await mkdir(path.join(dir, 'shared', 'sub'), { recursive: true });
  await mkdir(path.join(dir, 'outside'));
  await mkdir(path.join(dir, 'rw'));
  await writeFile(path.join(dir, 'shared', 'hello.txt'), 'hi from the host\n');
  await writeFile(path.join(dir, 'shared', 'sub', 'deep.txt'), 'deep\n');
  await writeFile(path.join(dir, 'outside', 'secret.txt'), 'SECRET\n');
  await symlink('/etc', path.join(dir, 'shared', 'abs'));
  await symlink('../outside', path.join(dir, 'shared', 'up'));
  await symlink('../outside/secret.txt', path.join(dir, 'shared', 'secret-link'));
  server = await FolderServer.listen(path.join(dir, '9p.sock'), [
    { name: 'shared', path: path.join(dir, 'shared'), mode: 'ro' },
    { name: 'rw', path: path.join(dir, 'rw'), mode: 'rw' },
  ]);
});
after(async () => {
  await server.close();
  await removeDir(dir);
});

class Client {
  private buffer = Buffer.alloc(0);
  private waiting?: (message: Buffer) => void;
  closed = false;
  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      if (this.buffer.length >= 4 && this.buffer.length >= this.buffer.readUInt32LE(0)) {
        const size = this.buffer.readUInt32LE(0);
        const message = this.buffer.subarray(0, size);
        this.buffer = this.buffer.subarray(size);
        this.waiting?.(message);
      }
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiting?.(Buffer.alloc(0));
    });
  }
  static async connect(): Promise<Client> {
    const socket = net.connect(server.socketPath);
    await new Promise((resolve) => socket.once('connect', resolve));
    return new Client(socket);
  }
  /** Sends raw bytes, waits for one reply (empty if the server closed). */
  raw(bytes: Buffer): Promise<Buffer> {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.socket.write(bytes);
    });
  }
  async call(type: number, body: Writer): Promise<{ type: number; r: Reader }> {
    const reply = await this.raw(body.message(type, 1));
    assert.ok(reply.length >= 7, 'the server closed the connection');
    return { type: reply.readUInt8(4), r: new Reader(reply.subarray(7)) };
  }
  async ok(type: number, body: Writer): Promise<Reader> {
    const { type: got, r } = await this.call(type, body);
    if (got === T.Rlerror) assert.fail(`${type}: Rlerror ${r.u32()}`);
    assert.equal(got, type + 1);
    return r;
  }
  async errno(type: number, body: Writer): Promise<number> {
    const { type: got, r } = await this.call(type, body);
    assert.equal(got, T.Rlerror, `${type} succeeded`);
    return r.u32();
  }
  async attach(aname: string, fid = 0): Promise<void> {
    await this.ok(T.Tversion, new Writer().u32(8192).str('9P2000.L'));
    await this.ok(T.Tattach, new Writer().u32(fid).u32(NOFID).str('root').str(aname).u32(0));
  }
  walk(fid: number, newFid: number, ...names: string[]): Writer {
    const w = new Writer().u32(fid).u32(newFid).u16(names.length);
    for (const n of names) w.str(n);
    return w;
  }
  async read(fid: number): Promise<string> {
    await this.ok(T.Tlopen, new Writer().u32(fid).u32(0));
    const r = await this.ok(T.Tread, new Writer().u32(fid).u64(0).u32(4096));
    return r.bytes(r.u32()).toString();
  }
  close(): void {
    this.socket.destroy();
  }
}

test('a read-only folder: reading works, every change is refused with EACCES', async () => {
  const c = await Client.connect();
  await c.attach('shared');
  await c.ok(T.Twalk, c.walk(0, 1, 'hello.txt'));
  assert.equal(await c.read(1), 'hi from the host\n');
  await c.ok(T.Twalk, c.walk(0, 2, 'sub', 'deep.txt'));
  assert.equal(await c.read(2), 'deep\n');
  await c.ok(T.Twalk, c.walk(0, 3, 'hello.txt'));
  assert.equal(await c.errno(T.Tlopen, new Writer().u32(3).u32(1)), EACCES, 'open for writing');
  assert.equal(await c.errno(T.Tlopen, new Writer().u32(3).u32(0o1000)), EACCES, 'open with O_TRUNC');
  assert.equal(await c.errno(T.Tlcreate, new Writer().u32(0).str('new.txt').u32(1).u32(0o644).u32(0)), EACCES);
  assert.equal(await c.errno(T.Tmkdir, new Writer().u32(0).str('newdir').u32(0o755).u32(0)), EACCES);
  assert.equal(await c.errno(T.Tunlinkat, new Writer().u32(0).str('hello.txt').u32(0)), EACCES);
  assert.equal(await c.errno(T.Trenameat, new Writer().u32(0).str('hello.txt').u32(0).str('x')), EACCES);
  assert.equal(await c.errno(T.Tsetattr, new Writer().u32(3).u32(8).u32(0).u32(0).u32(0).u64(0).u64(0).u64(0).u64(0).u64(0)), EACCES);
  assert.equal(await c.errno(T.Tsymlink, new Writer().u32(0).str('l').str('/etc/shadow').u32(0)), 95);
  // Readdir lists the folder (and only it).
  await c.ok(T.Twalk, c.walk(0, 4));
  await c.ok(T.Tlopen, new Writer().u32(4).u32(0));
  const r = await c.ok(T.Treaddir, new Writer().u32(4).u64(0).u32(4096));
  const names: string[] = [];
  const end = r.u32();
  const entries = new Reader(r.bytes(end));
  for (let i = 0; i < 5; i++) {
    entries.bytes(13 + 8 + 1);
    names.push(entries.str());
  }
  assert.deepEqual(names, ['abs', 'hello.txt', 'secret-link', 'sub', 'up']);
  assert.equal(await readFile(path.join(dir, 'shared', 'hello.txt'), 'utf8'), 'hi from the host\n');
  c.close();
});

test('escapes: ".." and symlinks never reach outside the folder', async () => {
  const c = await Client.connect();
  await c.attach('shared');
  assert.equal(await c.errno(T.Twalk, c.walk(0, 1, '..')), EACCES);
  assert.equal(await c.errno(T.Twalk, c.walk(0, 1, '..', 'outside', 'secret.txt')), EACCES);
  assert.equal(await c.errno(T.Twalk, c.walk(0, 1, 'up', 'secret.txt')), ELOOP);
  assert.equal(await c.errno(T.Twalk, c.walk(0, 1, 'abs', 'shadow')), ELOOP);
  assert.equal(await c.errno(T.Twalk, c.walk(0, 1, 'sub/../../outside')), 22);
  // The link itself can be walked to and read as text, never opened.
  const r = await c.ok(T.Twalk, c.walk(0, 5, 'secret-link'));
  assert.equal(r.u16(), 1);
  assert.equal(r.u8(), QT_SYMLINK);
  assert.equal(await c.errno(T.Tlopen, new Writer().u32(5).u32(0)), ELOOP);
  assert.equal((await c.ok(T.Treadlink, new Writer().u32(5))).str(), '../outside/secret.txt');
  // An unknown export name, and the rw export's name from a read-only attach: no.
  assert.equal(await c.errno(T.Tattach, new Writer().u32(9).u32(NOFID).str('root').str('outside').u32(0)), EACCES);
  c.close();
});

test('a read-write folder: create, write, mkdir, unlink stay inside it', async () => {
  const c = await Client.connect();
  await c.attach('rw');
  await c.ok(T.Twalk, c.walk(0, 1));
  await c.ok(T.Tlcreate, new Writer().u32(1).str('note.txt').u32(2).u32(0o644).u32(0));
  const w = await c.ok(T.Twrite, new Writer().u32(1).u64(0).u32(5).raw(Buffer.from('hello')));
  assert.equal(w.u32(), 5);
  assert.equal(await readFile(path.join(dir, 'rw', 'note.txt'), 'utf8'), 'hello');
  await c.ok(T.Tmkdir, new Writer().u32(0).str('made').u32(0o755).u32(0));
  await c.ok(T.Tunlinkat, new Writer().u32(0).str('made').u32(0x200));
  assert.equal(await c.errno(T.Tlcreate, new Writer().u32(0).str('../escape.txt').u32(2).u32(0o644).u32(0)), 22);
  c.close();
});

test('revoked: open files and new attaches fail with EACCES; granted again: a new attach works', async () => {
  const c = await Client.connect();
  await c.attach('shared');
  await c.ok(T.Twalk, c.walk(0, 1, 'hello.txt'));
  await c.ok(T.Tlopen, new Writer().u32(1).u32(0));
  server.revoke('shared');
  assert.equal(await c.errno(T.Tread, new Writer().u32(1).u64(0).u32(100)), EACCES);
  assert.equal(await c.errno(T.Twalk, c.walk(0, 2, 'sub')), EACCES);
  assert.equal(await c.errno(T.Tattach, new Writer().u32(7).u32(NOFID).str('root').str('shared').u32(0)), EACCES);
  await server.grant({ name: 'shared', path: path.join(dir, 'shared'), mode: 'ro' });
  await c.ok(T.Tattach, new Writer().u32(8).u32(NOFID).str('root').str('shared').u32(0));
  await c.ok(T.Twalk, c.walk(8, 9, 'hello.txt'));
  assert.equal(await c.read(9), 'hi from the host\n');
  c.close();
});

test('hostile input: huge sizes close the connection, garbage gets errors, fids are bounded, the server keeps serving', async () => {
  const huge = await Client.connect();
  const big = Buffer.alloc(11);
  big.writeUInt32LE(0xffffffff, 0);
  big.writeUInt8(T.Tversion, 4);
  assert.equal((await huge.raw(big)).length, 0);
  assert.ok(huge.closed);

  const tooBig = await Client.connect();
  const msg = Buffer.alloc(7);
  msg.writeUInt32LE(MAX_MSIZE + 1, 0);
  assert.equal((await tooBig.raw(msg)).length, 0);

  // Short bodies for every message type: an error reply each, never a crash.
  const c = await Client.connect();
  await c.attach('shared');
  for (let type = 0; type < 256; type++) {
    const reply = await c.raw(new Writer().u8(1).message(type, 3));
    assert.ok(reply.length >= 7, `type ${type} closed the connection`);
  }
  // Random bodies after a valid header.
  for (let i = 0; i < 300; i++) {
    const body = Buffer.from(pseudoRandom(1 + (i % 200), i + 1));
    const type = [T.Twalk, T.Tlopen, T.Tread, T.Treaddir, T.Tgetattr, T.Tattach, T.Tlcreate, T.Tunlinkat, T.Treadlink, T.Tclunk][i % 10]!;
    const reply = await c.raw(new Writer().raw(body).message(type, 4));
    assert.ok(reply.length >= 7, `random message ${i} closed the connection`);
  }
  // Fids: at most 256 per connection.
  const f = await Client.connect();
  await f.attach('shared');
  let refused = 0;
  for (let i = 1; i < 300; i++) {
    const { type } = await f.call(T.Twalk, f.walk(0, i));
    if (type === T.Rlerror) refused++;
  }
  assert.equal(refused, 300 - 256);
  // Still serving.
  await f.ok(T.Tclunk, new Writer().u32(1));
  await f.ok(T.Twalk, f.walk(0, 1, 'hello.txt'));
  assert.equal(await f.read(1), 'hi from the host\n');
  for (const client of [huge, tooBig, c, f]) client.close();
});
