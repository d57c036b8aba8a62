import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { isHostmeError } from '../errors.js';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { applyGrantFlags, loadGrantFile, parseGrantText } from './flags.js';
import { emptyGrants, validateGrants } from './grant-set.js';
import { acceptAsks, asksBeyond, confirmAsks } from './ask.js';
import { GATEWAY_ONLY_NETWORK, networkPlan } from './plan.js';
import type { HostmeError } from '../errors.js';

let dir: string;
before(async () => { dir = await tempDir('hmgrants-'); });
after(async () => { await removeDir(dir); });

function refused(fn: () => unknown, field: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isHostmeError(err, 'grants-invalid'), String(err));
    assert.match(err.message, field);
    return true;
  });
}

const ROOT = '/srv/work';
const doc = (text: string) => parseGrantText(text, { source: 'g.json', base: ROOT, root: ROOT, yaml: false });

test('nothing is granted by default', () => {
  assert.deepEqual(validateGrants({}, { base: ROOT, root: ROOT }), emptyGrants());
  assert.deepEqual(applyGrantFlags([]), emptyGrants());
});

test('a grant file in JSON gets defaults and absolute folders inside the root', () => {
  const set = doc(JSON.stringify({ version: 1, console: true, dirs: [{ path: 'src' }, { path: '/srv/work/out', mode: 'rw' }], net: { networks: ['demo'], egress: [{ host: 'deb.debian.org', port: 443 }], ports: [{ hostPort: 8080, guestPort: 80 }] } }));
  assert.equal(set.console, true);
  assert.equal(set.screen, false);
  assert.deepEqual(set.dirs, [{ path: '/srv/work/src', mode: 'ro' }, { path: '/srv/work/out', mode: 'rw' }]);
  assert.deepEqual(set.net.ports, [{ hostPort: 8080, guestPort: 80, proto: 'tcp' }]);
});

test('bad grant files are refused with the field named', () => {
  refused(() => doc('{"dirs":[{"path":"src"},{"path":"../etc"}]}'), /^g\.json: grants\.dirs\[1\]\.path: outside the allowed root/);
  refused(() => doc('{"dirs":[{"path":"/etc/shadow"}]}'), /grants\.dirs\[0\]\.path: outside the allowed root/);
  refused(() => doc('{"dirs":[{"path":"/srv/workshop"}]}'), /grants\.dirs\[0\]\.path: outside/);
  refused(() => doc('{"net":{"ports":[{"hostPort":70000,"guestPort":80}]}}'), /grants\.net\.ports\[0\]\.hostPort: a port is 1\.\.65535/);
  refused(() => doc('{"net":{"egress":[{"host":"example.org","port":0}]}}'), /grants\.net\.egress\[0\]\.port: a port is 1\.\.65535/);
  refused(() => doc('{"net":{"egress":[{"host":"http://x/","port":80}]}}'), /grants\.net\.egress\[0\]\.host: a host is/);
  refused(() => doc('{"usb":true}'), /grants\.usb: unknown kind/);
  refused(() => doc('{"dirs":[{"path":"a","mode":"rwx"}]}'), /grants\.dirs\[0\]\.mode/);
  refused(() => doc('{"dirs":[{"path":"a","writable":true}]}'), /grants\.dirs\[0\]\.writable: unknown field/);
  refused(() => doc('{"resources":{"cpus":0}}'), /grants\.resources\.cpus/);
  refused(() => doc('{"console":"yes"}'), /grants\.console/);
  refused(() => doc('[1,2]'), /^g\.json: grants: /);
  refused(() => doc('{"dirs":'), /g\.json: not valid JSON/);
});

test('grant files in YAML, read from disk, resolve folders against the file', async () => {
  const file = path.join(dir, 'grants.yaml');
  await writeFile(file, 'console: true\ndirs:\n  - path: ./src\n    mode: ro\nnet:\n  egress:\n    - { host: 127.0.0.1, port: 8443 }\n');
  const set = await loadGrantFile(file, { root: dir });
  assert.deepEqual(set.dirs, [{ path: path.join(dir, 'src'), mode: 'ro' }]);
  assert.deepEqual(set.net.egress, [{ host: '127.0.0.1', port: 8443 }]);
  await writeFile(file, 'net:\n  ports:\n    - hostPort: 99999\n      guestPort: 22\n');
  await assert.rejects(loadGrantFile(file, { root: dir }), /grants\.yaml: grants\.net\.ports\[0\]\.hostPort: a port is 1\.\.65535/);
  await assert.rejects(loadGrantFile(path.join(dir, 'missing.json')), (err: unknown) => isHostmeError(err, 'grants-invalid'));
});

test('Deno-style flags: allows add, denies override in any order', () => {
  const opts = { cwd: ROOT, root: ROOT };
  const set = applyGrantFlags(['--deny-net=example.org:443', '--allow-net=example.org:443,network:demo,127.0.0.1:8080', '--allow-dir=./src:ro,out:rw', '--allow-port=8080,2222:22/tcp,53/udp', '--allow-console', '--allow-cpus=2', '--allow-memory=512', '--allow-disk=base:ro'], emptyGrants(), opts);
  assert.deepEqual(set.net.networks, ['demo']);
  assert.deepEqual(set.net.egress, [{ host: '127.0.0.1', port: 8080 }]);
  assert.deepEqual(set.dirs, [{ path: '/srv/work/src', mode: 'ro' }, { path: '/srv/work/out', mode: 'rw' }]);
  assert.deepEqual(set.net.ports, [{ hostPort: 8080, guestPort: 8080, proto: 'tcp' }, { hostPort: 2222, guestPort: 22, proto: 'tcp' }, { hostPort: 53, guestPort: 53, proto: 'udp' }]);
  assert.deepEqual(set.resources, { cpus: 2, memoryMiB: 512 });
  assert.deepEqual(set.disks, [{ image: '/srv/work/base', mode: 'ro' }]);
  assert.equal(set.console, true);

  const less = applyGrantFlags(['--deny-net', '--deny-dir=src', '--deny-port=53/udp', '--deny-console', '--deny-disk=base', '--deny-disk=./spare.img'], set, opts);
  // A denied disk stays as a stand-in (mode none), so it can be granted at runtime.
  assert.deepEqual(less.disks, [{ image: '/srv/work/base', mode: 'none' }, { image: '/srv/work/spare.img', mode: 'none' }]);
  refused(() => applyGrantFlags(['--allow-disk=/etc/shadow:ro'], emptyGrants(), opts), /^--allow-disk=\/etc\/shadow:ro: outside the allowed root/);
  assert.deepEqual(less.net.networks, []);
  assert.deepEqual(less.net.egress, []);
  assert.deepEqual(less.dirs, [{ path: '/srv/work/out', mode: 'rw' }]);
  assert.equal(less.net.ports.length, 2);
  assert.equal(less.console, false);
  assert.equal(set.console, true, 'the base set is not changed');
  // Denying a parent folder denies granted folders inside it.
  assert.deepEqual(applyGrantFlags(['--deny-dir=/srv'], less, opts).dirs, []);
});

test('bad flags are refused with the flag named', () => {
  const opts = { cwd: ROOT, root: ROOT };
  refused(() => applyGrantFlags(['--allow-dir=../../etc:ro'], emptyGrants(), opts), /^--allow-dir=\.\.\/\.\.\/etc:ro: outside the allowed root/);
  refused(() => applyGrantFlags(['--allow-port=65536'], emptyGrants(), opts), /--allow-port=65536: port "65536" is not 1\.\.65535/);
  refused(() => applyGrantFlags(['--allow-port=0'], emptyGrants(), opts), /not 1\.\.65535/);
  refused(() => applyGrantFlags(['--allow-net=example.org'], emptyGrants(), opts), /neither host:port nor network:NAME/);
  refused(() => applyGrantFlags(['--allow-net=network:Bad_Name'], emptyGrants(), opts), /network "Bad_Name"/);
  refused(() => applyGrantFlags(['--allow-net'], emptyGrants(), opts), /--allow-net: needs a value/);
  refused(() => applyGrantFlags(['--allow-usb=1'], emptyGrants(), opts), /not a grant flag/);
  refused(() => applyGrantFlags(['--allow-cpus=0'], emptyGrants(), opts), /--allow-cpus=0: needs a whole number 1\.\.64/);
  refused(() => applyGrantFlags(['--allow-console=yes'], emptyGrants(), opts), /takes no value/);
});

test('an image asking for a network nobody granted: refused without a terminal, accepted with --yes, declined on a terminal', async () => {
  const manifest = { network: { join: 'demo' } };
  const asks = asksBeyond(manifest, emptyGrants());
  assert.deepEqual(asks.map((a) => a.value), ['demo']);
  assert.deepEqual(asksBeyond(manifest, applyGrantFlags(['--allow-net=network:demo'])), []);
  await assert.rejects(confirmAsks('img@1', asks, { yes: false, terminal: false }), (err: HostmeError) => err.code === 'grants-refused' && /--allow-net=network:demo/.test(err.message));
  const quiet = { write: () => {} };
  assert.deepEqual(await confirmAsks('img@1', asks, { yes: true, terminal: false, ...quiet }), asks);
  assert.deepEqual(await confirmAsks('img@1', asks, { yes: false, terminal: true, ask: async () => 'n', ...quiet }), []);
  const yes = await confirmAsks('img@1', asks, { yes: false, terminal: true, ask: async () => 'y', ...quiet });
  assert.deepEqual(acceptAsks(emptyGrants(), yes).net.networks, ['demo']);
});

test('the network plan: a denied network keeps its NIC with the link down; a gateway caretaker needs the link but not membership', () => {
  assert.deepEqual(networkPlan({ asked: 'demo', granted: emptyGrants() }), { network: 'demo', linkUp: false, isolated: true });
  assert.deepEqual(networkPlan({ asked: 'demo', granted: applyGrantFlags(['--allow-net=network:demo']) }), { network: 'demo', linkUp: true, isolated: false });
  assert.deepEqual(networkPlan({ granted: applyGrantFlags(['--allow-net=127.0.0.1:8080']) }), { network: GATEWAY_ONLY_NETWORK, linkUp: true, isolated: true });
  assert.deepEqual(networkPlan({ granted: emptyGrants() }), { linkUp: false, isolated: true });
  assert.deepEqual(networkPlan({ asked: 'demo' }), { network: 'demo', linkUp: true, isolated: false });
});

test('the browser page lists the image\'s network ask in hostme run\'s words', async () => {
  const { browserGrantList } = await import('./page-grants.js');
  const asks = asksBeyond({ network: { join: 'demo' } }, emptyGrants());
  const page = browserGrantList({ asked: 'demo', joined: 'demo' });
  assert.deepEqual(page[0], { kind: 'network', text: asks[0]!.text, status: 'granted' });
  assert.equal(browserGrantList({ asked: 'demo' })[0]!.status, 'denied');
  assert.deepEqual(browserGrantList({}).filter((l) => l.status === 'denied').map((l) => l.kind), ['egress', 'dir', 'port']);
});
