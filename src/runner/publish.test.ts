import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePublish, userNetwork } from './publish.js';
import { buildQemuArgs } from '../vm/qemu.js';
import { hasCode } from '../testing/fixtures.js';

test('--publish parses like docker -p and binds to loopback unless an address is given', () => {
  assert.deepEqual(parsePublish('8080:80'), { hostAddr: '127.0.0.1', hostPort: 8080, guestPort: 80, proto: 'tcp' });
  assert.deepEqual(parsePublish('0.0.0.0:5353:53/udp'), { hostAddr: '0.0.0.0', hostPort: 5353, guestPort: 53, proto: 'udp' });
  for (const bad of ['80', '0:80', '8080:0', '70000:80', 'a:80', '1.2.3.400:80:80', '8080:80/sctp', '8080:80,hostfwd=tcp::22-:22']) {
    assert.throws(() => parsePublish(bad), hasCode('usage'), bad);
  }
});

test('a published guest is restricted unless --internet; nothing published means no NIC', () => {
  assert.equal(userNetwork([], false), undefined);
  const net = userNetwork([parsePublish('8080:80')], false)!;
  const spec = { disks: [], memoryMiB: 64, cpus: 1, arch: 'x86_64' as const, console: 'none' as const, netdev: net };
  assert.ok(buildQemuArgs(spec, 'tcg', '/q').includes('user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:8080-:80'));
  const open = userNetwork([parsePublish('8080:80')], true)!;
  assert.ok(buildQemuArgs({ ...spec, netdev: open }, 'tcg', '/q').includes('user,id=n0,hostfwd=tcp:127.0.0.1:8080-:80'));
  assert.deepEqual(userNetwork(undefined, true), { hostfwd: [], restrict: false });
  assert.throws(() => userNetwork([parsePublish('8080:80'), parsePublish('8080:81')], false), hasCode('usage'));
});
