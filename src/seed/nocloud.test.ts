import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { parse } from 'yaml';
import { isHostmeError } from '../errors.js';
import { runCli } from '../testing/published-guest.js';
import { cmdlinePreset, makeNoCloudSeed, prefixToNetmask, renderSeedFiles } from './nocloud.js';

const exec = promisify(execFile);
const mtoolsEnv = { ...process.env, MTOOLS_SKIP_CHECK: '1', MTOOLSRC: '/dev/null' };
const mtype = async (img: string, name: string) => (await exec('mtype', ['-i', img, `::${name}`], { env: mtoolsEnv, maxBuffer: 64 * 1024 * 1024 })).stdout;

describe('cloud-init NoCloud seed', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'hostme-seed-test-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('static network: vfat labelled CIDATA with meta-data, user-data, network-config', async () => {
    const img = join(dir, 'seed.img');
    const userData = '#cloud-config\npackages: [htop]\n';
    await makeNoCloudSeed({ instanceId: 'i-123', hostname: 'web1', userData, network: { address: '192.168.122.10/24', gateway: '192.168.122.1', dns: ['1.1.1.1', '9.9.9.9'] } }, img);
    const listing = (await exec('mdir', ['-i', img, '-b', '::'], { env: mtoolsEnv })).stdout.split('\n').filter(Boolean).map((l) => l.replace(/^::\//, '')).sort();
    assert.deepEqual(listing, ['meta-data', 'network-config', 'user-data']);
    assert.deepEqual(parse(await mtype(img, 'meta-data')), { 'instance-id': 'i-123', 'local-hostname': 'web1' });
    assert.equal(await mtype(img, 'user-data'), userData);
    assert.deepEqual(parse(await mtype(img, 'network-config')), {
      version: 2,
      ethernets: {
        primary: {
          match: { name: 'e*' },
          addresses: ['192.168.122.10/24'],
          routes: [{ to: '0.0.0.0/0', via: '192.168.122.1' }],
          nameservers: { addresses: ['1.1.1.1', '9.9.9.9'] },
        },
      },
    });
    assert.match((await exec('mlabel', ['-i', img, '-s', '::'], { env: mtoolsEnv })).stdout, /Volume label is CIDATA\b/);
    const blkid = (await exec('blkid', ['-o', 'export', img])).stdout;
    assert.match(blkid, /^TYPE=vfat$/m);
    assert.match(blkid, /^LABEL=CIDATA$/m);
    assert.deepEqual(await readdir(dir), ['seed.img'], 'no temporary files left');
  });

  test('defaults: #cloud-config user-data, instance id from the hostname, DHCP on the first ethernet', () => {
    const files = renderSeedFiles({ hostname: 'box' });
    assert.equal(files['user-data'], '#cloud-config\n');
    assert.deepEqual(parse(files['meta-data']), { 'instance-id': 'iid-box', 'local-hostname': 'box' });
    assert.deepEqual(parse(files['network-config']), { version: 2, ethernets: { primary: { match: { name: 'e*' }, dhcp4: true } } });
  });

  test('large user-data gets a larger filesystem', async () => {
    const img = join(dir, 'big.img');
    const userData = `#cloud-config\nwrite_files:\n  - path: /big\n    content: ${'x'.repeat(3 * 1024 * 1024)}\n`;
    await makeNoCloudSeed({ hostname: 'big', userData }, img);
    assert.equal(await mtype(img, 'user-data'), userData);
  });

  test('bad input is refused with a usage error', () => {
    const bad = (f: () => unknown, re: RegExp) => assert.throws(f, (err: unknown) => isHostmeError(err, 'usage') && re.test(err.message));
    bad(() => renderSeedFiles({ hostname: 'not a host' }), /not a valid hostname/);
    bad(() => renderSeedFiles({ hostname: 'h', network: { address: '10.0.0.1' } }), /prefix length/);
    bad(() => renderSeedFiles({ hostname: 'h', network: { address: '10.0.0.1/33' } }), /prefix length/);
    bad(() => renderSeedFiles({ hostname: 'h', network: { address: '10.0.0.1/24', gateway: 'fe80::1' } }), /not an IPv4/);
    bad(() => renderSeedFiles({ hostname: 'h', network: { address: '10.0.0.1/24', dns: ['dns.example'] } }), /DNS server/);
    bad(() => cmdlinePreset({ hostname: 'h', network: { address: '2001:db8::5/64' } }), /IPv4 only/);
  });

  test('cmdlinePreset: ip= and hostname= fragments', () => {
    assert.deepEqual(cmdlinePreset({ hostname: 'web1', network: { address: '10.0.2.15/24', gateway: '10.0.2.2', dns: ['10.0.2.3'] } }), [
      'ip=10.0.2.15::10.0.2.2:255.255.255.0:web1:eth0:off:10.0.2.3',
      'hostname=web1',
    ]);
    assert.deepEqual(cmdlinePreset({ hostname: 'web1' }), ['hostname=web1']);
    assert.equal(prefixToNetmask(0), '0.0.0.0');
    assert.equal(prefixToNetmask(20), '255.255.240.0');
    assert.equal(prefixToNetmask(32), '255.255.255.255');
  });

  test('hostme seed CLI writes the image and prints the cmdline preset', async () => {
    const img = join(dir, 'cli.img');
    const result = await runCli(['seed', img, '--hostname', 'cli-host', '--address', '10.1.2.3/16', '--gateway', '10.1.0.1', '--dns', '10.1.0.53', '--json']);
    assert.equal(result.code, 0, result.stderr);
    const out = JSON.parse(result.stdout);
    assert.equal(out.cmdline, 'ip=10.1.2.3::10.1.0.1:255.255.0.0:cli-host:eth0:off:10.1.0.53 hostname=cli-host');
    assert.match(await mtype(img, 'meta-data'), /local-hostname: cli-host/);
    const bad = await runCli(['seed', join(dir, 'x.img'), '--hostname', 'h', '--gateway', '10.0.0.1']);
    assert.equal(bad.code, 2); // a usage error (errors.ts EXIT_STATUS)
    assert.match(bad.stderr, /need --address/);
    const missing = await runCli(['run', dir, 'small', '--seed', join(dir, 'no-such-seed.img'), '--console', 'none']);
    assert.equal(missing.code, 2); // usage, too
    assert.match(missing.stderr, /--seed .*no-such-seed\.img: no such file \(make one with hostme seed\)/);
  });
});
