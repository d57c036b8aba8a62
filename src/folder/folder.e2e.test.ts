import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { controlRequest } from '../net/control.js';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { bootGrantsGuest, grantsCli, type GrantsGuest, type GuestImage } from '../testing/grants-guest.js';
import { controlGrants } from '../grants/runtime.js';
import { FOLDER_PORT, FolderServer } from './server.js';

// A real guest (QEMU, TCG) with the Linux 9P client (scripts/guest/build-9p.sh:
// the reference guest's cloud kernel has none) mounts a granted host folder
// over TCP at its gateway: the switch splices port 564 to hostme's server.
let dir: string;
let cache: string;
let guest: GrantsGuest | undefined;
let folders: FolderServer | undefined;
const NETWORK = 'folders';
const INSTANCE = 'f9';

function loadGuest(): GuestImage {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  const file = path.join(process.env.HOSTME_GUEST_DIR || path.join(root, '.cache', 'guest'), 'hello-9p', 'guest.json');
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as GuestImage;
  } catch {
    throw new Error(`the 9P test guest is missing (${file}): run scripts/guest/build-9p.sh`);
  }
}

before(async () => {
  dir = await tempDir('hmfolder-');
  cache = await tempDir('hmfolder-cache-');
});
after(async () => {
  await guest?.close();
  await folders?.close();
  await controlRequest(dir, { op: 'stop' }).catch(() => {});
  await removeDir(dir);
  await removeDir(cache);
});

test('a read-only folder in a real guest: reads work, writes fail with a permission error, escapes stay inside, revoke cuts access', { timeout: 900_000 }, async () => {
  const image = loadGuest();
  const shared = path.join(dir, 'grant', 'shared');
  await mkdir(shared, { recursive: true });
  await mkdir(path.join(dir, 'grant', 'outside'));
  await writeFile(path.join(shared, 'hello.txt'), 'HELLO-FROM-HOST\n');
  await writeFile(path.join(dir, 'grant', 'outside', 'secret.txt'), 'HOST-SECRET\n');
  await symlink('../outside', path.join(shared, 'up'));
  await symlink(path.join(dir, 'grant', 'outside', 'secret.txt'), path.join(shared, 'abs-link'));
  process.env.HOSTME_GRANT_ROOT = path.join(dir, 'grant');
  const cli = grantsCli(cache);
  folders = await FolderServer.listen(path.join(dir, '9p.sock'), [{ name: 'shared', path: shared, mode: 'ro' }]);
  guest = await bootGrantsGuest({
    work: dir, cache, instance: INSTANCE, image, control: { net: true, folders },
    network: { name: NETWORK, isolated: true, services: [{ port: FOLDER_PORT, socket: folders.socketPath }] },
  });
  const { sh, instanceDir } = guest;
  const gateway = guest.gateway!;
  const mount = `mount -t 9p -o trans=tcp,port=${FOLDER_PORT},aname=shared,version=9p2000.L ${gateway} /mnt`;

  const mounted = await sh(mount);
  assert.equal(mounted.rc, 0, mounted.out);
  const read = await sh('cat /mnt/hello.txt');
  assert.equal(read.rc, 0, read.out);
  assert.match(read.out, /HELLO-FROM-HOST/);

  for (const write of ['echo x > /mnt/new.txt', 'echo x >> /mnt/hello.txt', 'mkdir /mnt/d', 'rm /mnt/hello.txt', 'ln -s /etc/shadow /mnt/l']) {
    const r = await sh(write);
    assert.notEqual(r.rc, 0, `${write} succeeded`);
    assert.match(r.out, /Permission denied|Operation not supported|Read-only/, `${write}: ${r.out}`);
  }
  assert.equal(await readFile(path.join(shared, 'hello.txt'), 'utf8'), 'HELLO-FROM-HOST\n');

  // Escapes: the links resolve inside the guest (where nothing is), never on the host.
  const escapes = await sh('cat /mnt/up/secret.txt; cat /mnt/abs-link; cat /mnt/../outside/secret.txt; ls /mnt/up/');
  assert.doesNotMatch(escapes.out, /HOST-SECRET/);
  assert.doesNotMatch(escapes.out, /secret\.txt\r?\n/);

  // Revoked: the next access fails; granted again: a new mount reads.
  assert.equal(await cli('revoke', INSTANCE, 'dir', 'shared'), 0);
  const denied = await sh('cat /mnt/hello.txt');
  assert.notEqual(denied.rc, 0, `read after revoke: ${denied.out}`);
  assert.doesNotMatch(denied.out.split('\n').slice(1).join('\n'), /HELLO-FROM-HOST/);
  assert.equal(await cli('grant', INSTANCE, 'dir', `${shared}:ro`), 0);
  const again = await sh(`umount -f /mnt; ${mount} && cat /mnt/hello.txt`);
  assert.equal(again.rc, 0, again.out);
  assert.match(again.out, /HELLO-FROM-HOST/);

  // Outside the allowed root: refused by the instance.
  assert.equal(await cli('grant', INSTANCE, 'dir', '/etc:ro'), 2, 'refused as a usage error (exit 2)');
  const status = await controlGrants(instanceDir, { op: 'status' });
  assert.deepEqual(status.granted, { net: true, egress: [], dirs: [`${shared}:ro as shared`] });
});
