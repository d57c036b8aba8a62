import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { controlRequest } from '../net/control.js';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { bootGrantsGuest, grantsCli } from '../testing/grants-guest.js';
import { CacheDir } from '../runner/cache-dir.js';
import type { VmHandle } from '../vm/qemu.js';
import { controlGrants, readAudit, serveGrantControl, type GrantControl } from './runtime.js';

// Two reference guests (real QEMU, TCG) on one overlay network; alpha's
// network grant is revoked and granted again through its control socket.
let dir: string;
const vms: VmHandle[] = [];
let control: GrantControl | undefined;
const NETWORK = 'grants';

before(async () => {
  dir = await tempDir('hmgrant-');
});
after(async () => {
  await control?.close();
  await Promise.all(vms.map((vm) => vm.shutdown().catch(() => {})));
  await controlRequest(dir, { op: 'stop' }).catch(() => {});
  await removeDir(dir);
});

let cache: string;
async function boot(instance: string): Promise<{ vm: VmHandle; ip: string }> {
  const guest = await bootGrantsGuest({ work: dir, cache, instance, network: { name: NETWORK }, onLaunch: (vm) => vms.push(vm) });
  return { vm: guest.vm, ip: guest.ip! };
}

let marker = 0;
async function rc(vm: VmHandle, command: string): Promise<number> {
  const tag = `DONE-${++marker}`;
  const since = vm.consoleLength;
  vm.sendConsole(`${command} >/dev/null 2>&1; echo ${tag} rc=$?\n`);
  return Number((await vm.waitForConsole(new RegExp(`${tag} rc=(\\d+)`), { timeoutMs: 60_000, since }))[1]);
}

test('revoking the network grant stops ping, granting it again resumes it, and both are in the audit log', { timeout: 900_000 }, async () => {
  cache = await tempDir('hmgrant-cache-');
  const [alpha, beta] = await Promise.all([boot('alpha'), boot('beta')]);
  const instanceDir = new CacheDir(cache).instanceDir('alpha');
  const cli = grantsCli(cache);
  try {
    const bandwidth = { set: async (mbit: number | undefined) => { await controlRequest(dir, { op: 'bandwidth', instance: 'alpha', ...(mbit !== undefined ? { mbit } : {}) }); } };
    control = await serveGrantControl({ instanceDir, instance: 'alpha', qmp: alpha.vm.qmp, net: true, bandwidth });
    assert.equal(await rc(alpha.vm, `ping -c 1 -W 5 ${beta.ip}`), 0);

    assert.equal(await cli('revoke', 'alpha', 'net'), 0);
    assert.equal(await rc(alpha.vm, `ping -c 2 -W 2 ${beta.ip}`), 1, 'ping still works after revoke');
    assert.equal(await rc(beta.vm, `ping -c 2 -W 2 ${alpha.ip}`), 1, 'alpha still answers after revoke');

    assert.equal(await cli('grant', 'alpha', 'net'), 0);
    assert.equal(await cli('grants', 'alpha'), 0);
    assert.equal(await cli('grant', 'alpha', 'usb'), 2);
    // The guest's NIC sees the carrier come back; a few pings cover its ARP.
    assert.equal(await rc(alpha.vm, `ping -c 1 -W 5 ${beta.ip} || ping -c 1 -W 5 ${beta.ip}`), 0, 'ping did not resume after grant');

    const status = await controlGrants(instanceDir, { op: 'status' });
    assert.deepEqual(status.granted, { net: true, egress: [], dirs: [] });
    const log = await readAudit(instanceDir);
    assert.deepEqual(log.map((e) => [e.op, e.kind, e.ok]), [['start', 'net', true], ['revoke', 'net', true], ['grant', 'net', true]]);
    await assert.rejects(controlGrants(instanceDir, { op: 'grant', kind: 'usb' }), /a request is/);

    // Bandwidth: the switch port of alpha is policed at 1 Mbit/s; small pings still pass; revoked, unlimited again.
    const alphaPort = async () => ((await controlRequest(dir, { op: 'ls' })) as unknown as { networks: Array<{ name: string; ports: Array<{ instance?: string; bandwidthMbit?: number }> }> })
      .networks.find((n) => n.name === NETWORK)!.ports.find((p) => p.instance === 'alpha')!;
    assert.equal(await cli('grant', 'alpha', 'bandwidth', '1'), 0);
    assert.equal((await alphaPort()).bandwidthMbit, 1);
    assert.equal((await controlGrants(instanceDir, { op: 'status' }) as { granted: { bandwidthMbit?: number } }).granted.bandwidthMbit, 1);
    assert.equal(await rc(alpha.vm, `ping -c 1 -W 5 ${beta.ip}`), 0, 'a small ping passes 1 Mbit/s');
    assert.equal(await cli('grant', 'alpha', 'bandwidth', 'lots'), 2);
    assert.equal(await cli('revoke', 'alpha', 'bandwidth'), 0);
    assert.equal((await alphaPort()).bandwidthMbit, undefined);
  } finally {
    await control?.close();
    control = undefined;
    await removeDir(cache);
  }
});
