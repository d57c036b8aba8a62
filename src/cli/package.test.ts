// What `npm pack` ships: the product only (the hub serves this tarball to visitors who install hostme).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { test } from 'node:test';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

test('npm pack ships the CLI, the compiled product and the run page, and no tests, fixtures or benchmarks', async () => {
  const { stdout } = await promisify(execFile)('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: REPO_ROOT, maxBuffer: 16 << 20 });
  const files = (JSON.parse(stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path);
  assert.ok(files.includes('bin/hostme.js'));
  assert.ok(files.includes('dist/cli/main.js'));
  assert.ok(files.some((f) => f.startsWith('dist-web/')), 'the run page bundle');
  const leaked = files.filter((f) => /\.test\.|\.case\.|fixture|\/testing\/|^dist\/bench\//.test(f));
  assert.deepEqual(leaked, []);
});
