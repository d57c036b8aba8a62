import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { controlRequest } from '../net/control.js';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { bootGrantsGuest, grantsCli, type GrantsGuest } from '../testing/grants-guest.js';
import type { VmHandle } from '../vm/qemu.js';

// Two real guests (QEMU, TCG) on one network, neither a member of it
// (isolated): they reach each other only on the port hostme connect opened.
let dir: string;
const vms: VmHandle[] = [];
const NETWORK = 'pair';

before(async () => { dir = await tempDir('hmconnect-'); });
after(async () => {
  await Promise.all(vms.map((vm) => vm.shutdown().catch(() => {})));
  await controlRequest(dir, { op: 'stop' }).catch(() => {});
  await removeDir(dir);
});

async function boot(instance: string): Promise<{ vm: VmHandle; ip: string }> {
  const guest: GrantsGuest = await bootGrantsGuest({ work: dir, cache: path.join(dir, 'cache'), instance, network: { name: NETWORK, isolated: true }, onLaunch: (vm) => vms.push(vm) });
  return { vm: guest.vm, ip: guest.ip! };
}

let marker = 0;
async function sh(vm: VmHandle, command: string): Promise<string> {
  const tag = `DONE-${++marker}`;
  const since = vm.consoleLength;
  vm.sendConsole(`${command}; echo ${tag} rc=$?\n`);
  await vm.waitForConsole(new RegExp(`${tag} rc=\\d+`), { timeoutMs: 60_000, since });
  return vm.console.slice(-(vm.consoleLength - since)).split('\n').slice(1).join('\n');
}

test('two environments connected by one port reach each other on that port only', { timeout: 900_000 }, async () => {
  const [app, db] = await Promise.all([boot('app'), boot('db')]);
  await sh(db.vm, '(while true; do echo DB-ANSWER | nc -l -p 5432; done >/dev/null 2>&1 &); (while true; do echo OTHER-ANSWER | nc -l -p 2222; done >/dev/null 2>&1 &)');
  const cli = grantsCli(path.join(dir, 'cache'), '--dir', dir);
  const dial = (port: number) => sh(app.vm, `sleep 2 | timeout 6 nc ${db.ip} ${port}`);

  assert.doesNotMatch(await dial(5432), /DB-ANSWER/, 'reached before connect');
  assert.doesNotMatch(await sh(app.vm, `ping -c 1 -W 2 ${db.ip}`), / 0% packet loss/);

  assert.equal(await cli('connect', 'app', 'db', '--port', '5432'), 0);
  // A few tries: the failed ARP lookup before connect stays cached for a few seconds.
  assert.match(await sh(app.vm, `for i in 1 2 3 4 5 6; do sleep 2 | timeout 6 nc ${db.ip} 5432 | grep DB-ANSWER && break; sleep 2; done`), /^DB-ANSWER\r?$/m);
  assert.doesNotMatch(await dial(2222), /OTHER-ANSWER/, 'another port got through');
  assert.doesNotMatch(await sh(app.vm, `ping -c 1 -W 2 ${db.ip}`), / 0% packet loss/, 'ping got through');

  assert.equal(await cli('disconnect', 'app', 'db', '--port', '5432'), 0);
  assert.doesNotMatch(await dial(5432), /DB-ANSWER/, 'reached after disconnect');
  assert.equal(await cli('connect', 'app', 'nobody', '--port', '5432'), 1);
});
