import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { objectPath } from '../format/digest.js';
import { isHole } from '../format/chunk-index.js';
import { openRepository } from '../repo/repository.js';
import { makeDiskBytes, removeDir, tempDir, writeDisk } from '../testing/fixtures.js';

const BIN = fileURLToPath(new URL('../../bin/hostme.js', import.meta.url));

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function hostme(args: string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, ...env, CI: '1' }, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

function json(result: Result): Record<string, unknown> {
  try {
    return JSON.parse(result.stdout) as Record<string, unknown>;
  } catch (err) {
    assert.fail(`stdout is not one JSON document (${(err as Error).message}):\n${result.stdout}\nstderr: ${result.stderr}`);
  }
}

/** A failure: non-zero exit and exactly one "hostme: …" line on stderr. */
function assertFailure(result: Result, exitCode = 1): string {
  assert.equal(result.code, exitCode, `exit code; stderr: ${result.stderr}`);
  const lines = result.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line on stderr: ${JSON.stringify(result.stderr)}`);
  assert.match(lines[0]!, /^hostme: \S/);
  return lines[0]!;
}

describe('hostme CLI', () => {
  let work: string;
  let keyFile: string;
  let repo: string;
  let disk: string;
  const env = () => ({ HOSTME_KEY: join(work, 'default.key') });

  before(async () => {
    work = await tempDir('hostme-cli-');
    keyFile = join(work, 'keys', 'publisher.key');
    repo = join(work, 'repo');
    disk = await writeDisk(join(work, 'disk.raw'), makeDiskBytes(1, 11));
  });
  after(() => removeDir(work));

  test('keygen writes a 0600 private key and a public key, and refuses to overwrite', async () => {
    const result = await hostme(['keygen', keyFile, '--json']);
    assert.equal(result.code, 0, result.stderr);
    const out = json(result);
    assert.match(String(out.keyId), /^[0-9a-f]{64}$/);
    assert.equal((await stat(keyFile)).mode & 0o777, 0o600);
    assert.match(await readFile(`${keyFile}.pub`, 'utf8'), /^hostme-ed25519 [A-Za-z0-9+/]{43}=\n$/);
    const before = await readFile(keyFile, 'utf8');
    assert.match(before, /BEGIN PRIVATE KEY/);

    const again = await hostme(['keygen', keyFile]);
    assert.match(assertFailure(again), /already exists/);
    assert.equal(await readFile(keyFile, 'utf8'), before, 'the key is untouched');
  });

  test('pack, ls, verify and inspect with --json print one parseable JSON document', async () => {
    const pack = await hostme(['pack', disk, '--repo', repo, '--name', 'demo', '--key', keyFile, '--chunk-size', '64K', '--json'], env());
    assert.equal(pack.code, 0, pack.stderr);
    const summary = json(pack);
    assert.equal(summary.name, 'demo');
    assert.equal(summary.version, '1');
    assert.equal(summary.chunkSize, 65536);
    assert.equal(summary.virtualSize, 1024 * 1024);
    assert.equal(pack.stderr, '', 'no progress noise when not on a terminal');

    const ls = await hostme(['ls', repo, '--json']);
    assert.equal(ls.code, 0, ls.stderr);
    const listing = json(ls) as { images: Record<string, { latest: string }> };
    assert.equal(listing.images.demo?.latest, '1');

    const verify = await hostme(['verify', repo, 'demo@1', '--pubkey', `${keyFile}.pub`, '--json']);
    assert.equal(verify.code, 0, verify.stderr);
    const report = json(verify);
    assert.equal(report.ok, true);
    assert.equal(report.signer, summary.keyId);

    const inspect = await hostme(['inspect', repo, 'demo', '--json']);
    assert.equal(inspect.code, 0, inspect.stderr);
    const info = json(inspect) as { manifest: { name: string }; blobs: unknown[] };
    assert.equal(info.manifest.name, 'demo');
    assert.equal(info.blobs.length, 1);
  });

  test('human output works too', async () => {
    const ls = await hostme(['ls', repo]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /^demo {2}1 \(latest\)$/m);
    const verify = await hostme(['verify', repo, 'demo']);
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stdout, /^OK demo@1/);
  });

  test('a failure exits 1 with a one-line reason, and an {error} document with --json', async () => {
    const human = await hostme(['verify', repo, 'nosuch']);
    assert.match(assertFailure(human), /no image named "nosuch"/);
    assert.equal(human.stdout, '');

    const machine = await hostme(['verify', repo, 'nosuch', '--json']);
    assertFailure(machine);
    const body = json(machine) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'image-not-found');
    assert.match(body.error.message, /nosuch/);

    const notDisk = join(work, 'notes.txt');
    await writeFile(notDisk, 'not a disk\n');
    const pack = await hostme(['pack', notDisk, '--repo', repo, '--name', 'demo', '--key', keyFile, '--json'], env());
    assertFailure(pack);
    assert.equal((json(pack) as { error: { code: string } }).error.code, 'disk-unreadable');
  });

  test('a trust failure is reported as key-mismatch', async () => {
    const other = join(work, 'other.key');
    assert.equal((await hostme(['keygen', other])).code, 0);
    const result = await hostme(['verify', repo, 'demo', '--pubkey', `${other}.pub`, '--json']);
    assertFailure(result);
    assert.equal((json(result) as { error: { code: string } }).error.code, 'key-mismatch');
  });

  test('verify of a damaged image exits 1 and --json is still one document naming the bad object', async () => {
    const repository = openRepository(repo);
    const index = await repository.readIndex((await repository.loadImage('demo', '1')).manifest.disks[0]!);
    const id = index.ids.find((chunk) => !isHole(chunk))!;
    const file = join(repo, objectPath(id));
    const good = await readFile(file);
    const bad = Buffer.from(good);
    bad[bad.length >> 1] ^= 0xff;
    await writeFile(file, bad);
    try {
      const human = await hostme(['verify', repo, 'demo']);
      assertFailure(human);
      assert.match(human.stdout, /^FAILED demo@1/);
      const machine = await hostme(['verify', repo, 'demo', '--json']);
      assertFailure(machine);
      const body = json(machine) as { error: { code: string; message: string; report?: { ok: boolean; bad: Array<{ id: string; problem: string }> } } };
      assert.equal(body.error.code, 'verify-failed');
      assert.equal(body.error.report?.ok, false);
      assert.deepEqual(body.error.report?.bad.map((b) => [b.id, b.problem]), [[id, 'invalid']]);
    } finally {
      await writeFile(file, good);
    }
  });

  test('usage errors exit 2', async () => {
    const unknown = await hostme(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command/);
    const missingOption = await hostme(['pack', disk]);
    assert.equal(missingOption.code, 2);
    // A usage error found by the command itself (HostmeError 'usage'), not by the option parser: also 2.
    const seedKey = join(work, 'seed-test.key');
    assert.equal((await hostme(['keygen', seedKey])).code, 0);
    const badSeed = await hostme(['build', join(work, 'no-such-hostme.json'), '--repo', join(work, 'repo-seed'), '--key', seedKey, '--seed', join(work, 'no-such-seed.json')]);
    assert.equal(badSeed.code, 2, badSeed.stderr);
    assert.match(badSeed.stderr, /--seed/);
    const help = await hostme(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /keygen/);
  });

  test("a subcommand's --version is its own, not hostme's", async () => {
    const packed = await hostme(['pack', disk, '--repo', join(work, 'repo-version'), '--name', 'v', '--version', '7', '--key', keyFile, '--json'], env());
    assert.equal(packed.code, 0, packed.stderr);
    assert.doesNotMatch(packed.stdout, /^0\.1\.0/);
    const listed = await hostme(['ls', join(work, 'repo-version'), '--json']);
    assert.match(listed.stdout, /"7"/);
    const top = await hostme(['--version']);
    assert.equal(top.stdout.trim(), '0.1.0');
  });

  test('publisher text with terminal escape sequences is printed escaped, never raw', async () => {
    const evil = 'nice image\u001b]0;pwned\u0007\u001b[2J\u009b31m';
    const repoDir = join(work, 'repo-escape');
    const packed = await hostme(['pack', disk, '--repo', repoDir, '--name', 'esc', '--version', '1', '--key', keyFile, '--description', evil], env());
    assert.equal(packed.code, 0, packed.stderr);
    const inspected = await hostme(['inspect', repoDir, 'esc']);
    assert.equal(inspected.code, 0, inspected.stderr);
    assert.match(inspected.stdout, /nice image\\x1b\]0;pwned\\x07\\x1b\[2J\\x9b31m/);
    assert.doesNotMatch(inspected.stdout, /[\u001b\u0007\u009b]/);
  });
});

