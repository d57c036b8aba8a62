import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli } from '../testing/published-guest.js';
import { tempDir, removeDir, run } from '../testing/fixtures.js';
import { withDefaults } from './install-handler.js';

test('install-handler writes a desktop entry and makes it the default for the hostme link schemes', async () => {
  const home = await tempDir('hostme-xdg-');
  try {
    const env = { XDG_DATA_HOME: join(home, 'data'), XDG_CONFIG_HOME: join(home, 'config') };
    await mkdir(env.XDG_CONFIG_HOME, { recursive: true });
    await writeFile(join(env.XDG_CONFIG_HOME, 'mimeapps.list'), '[Default Applications]\ntext/html=firefox.desktop\nx-scheme-handler/hostme+https=old.desktop\n');
    const out = await runCli(['install-handler', '--json'], { env });
    assert.equal(out.code, 0, out.stderr);
    const desktop = await readFile(join(env.XDG_DATA_HOME, 'applications', 'hostme-handler.desktop'), 'utf8');
    assert.match(desktop, /^Exec=.*hostme\.js run %u$/m);
    assert.match(desktop, /^MimeType=x-scheme-handler\/hostme\+https;x-scheme-handler\/hostme\+http;x-scheme-handler\/web\+hostme;application\/vnd\.hostme\.reference\+json;$/m);
    const mimeapps = await readFile(join(env.XDG_CONFIG_HOME, 'mimeapps.list'), 'utf8');
    assert.match(mimeapps, /^text\/html=firefox\.desktop$/m, 'other defaults must be kept');
    assert.match(mimeapps, /^x-scheme-handler\/hostme\+https=hostme-handler\.desktop$/m);
    assert.doesNotMatch(mimeapps, /old\.desktop/);
    // The desktop itself answers: the reference file type opens in hostme.
    const query = await run('xdg-mime', ['query', 'default', 'application/vnd.hostme.reference+json'], { env: { ...process.env, ...env } });
    assert.equal(query.stdout.trim(), 'hostme-handler.desktop');
  } finally {
    await removeDir(home);
  }
});

test('registering twice leaves one entry per scheme', () => {
  const once = withDefaults('', 'hostme-handler.desktop');
  assert.equal(withDefaults(once, 'hostme-handler.desktop'), once);
});
