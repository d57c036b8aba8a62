import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isHostmeError } from '../errors.js';
import { applyGrantFlags } from './flags.js';
import { emptyGrants } from './grant-set.js';
import { acceptAsks, asksBeyond, confirmAsks } from './ask.js';
import { ConsoleGate, ScreenCaretaker, consoleOnCli, screenAdapter } from './devices.js';
import { RUNTIME_KINDS } from './runtime.js';
import { grantFlagsOf } from '../cli/run-grants.js';

const opts = { cwd: '/srv/work', root: '/srv/work' };

test('--allow/--deny-console and -screen parse, take no value, and a deny wins', () => {
  const set = applyGrantFlags(['--allow-console', '--allow-screen'], emptyGrants(), opts);
  assert.deepEqual([set.console, set.screen], [true, true]);
  const denied = applyGrantFlags(['--deny-screen', '--allow-screen', '--allow-console', '--deny-console'], emptyGrants(), opts);
  assert.deepEqual([denied.console, denied.screen], [false, false]);
  for (const flag of ['--allow-screen=vga', '--deny-console=yes']) {
    assert.throws(() => applyGrantFlags([flag], emptyGrants(), opts), (err) => isHostmeError(err, 'grants-invalid') && err.message.includes(flag) && /takes no value/.test(err.message));
  }
  assert.deepEqual(grantFlagsOf({ allowScreen: [true], denyConsole: [undefined] }), ['--deny-console', '--allow-screen']);
});

test('console and screen are kinds that change at runtime', () => {
  assert.ok(RUNTIME_KINDS.includes('console'));
  assert.ok(RUNTIME_KINDS.includes('screen'));
});

test('the console stays on for hostme run unless --deny-console or a grant file without it', () => {
  assert.equal(consoleOnCli({ granted: false, denyFlag: false, grantFile: false }), true);
  assert.equal(consoleOnCli({ granted: true, denyFlag: true, grantFile: false }), false);
  assert.equal(consoleOnCli({ granted: false, denyFlag: false, grantFile: true }), false);
  assert.equal(consoleOnCli({ granted: true, denyFlag: false, grantFile: true }), true);
});

test('the VGA adapter is there when asked, flagged (allowed or denied) or granted, else not', () => {
  assert.equal(screenAdapter({ asked: false, flag: false, granted: false }), false);
  assert.equal(screenAdapter({ asked: true, flag: false, granted: false }), true);
  assert.equal(screenAdapter({ asked: false, flag: true, granted: false }), true);
  assert.equal(screenAdapter({ asked: false, flag: false, granted: true }), true);
});

test('an image that asks for a screen: an ask beyond the set, --allow-screen named when refused, accepted grants it', async () => {
  const asks = asksBeyond({ hardware: { screen: true } }, emptyGrants());
  assert.deepEqual(asks.map((a) => a.kind), ['screen']);
  assert.deepEqual(asksBeyond({ hardware: { screen: true } }, { ...emptyGrants(), screen: true }), []);
  assert.deepEqual(asksBeyond({ hardware: {} }, emptyGrants()), []);
  await assert.rejects(confirmAsks('img@1', asks, { yes: false, terminal: false }), (err) => isHostmeError(err, 'grants-refused') && /--allow-screen/.test(err.message));
  assert.equal(acceptAsks(emptyGrants(), asks).screen, true);
});

test('the console gate forwards both ways only while granted; the screen caretaker refuses naming the grant', async () => {
  const typed: string[] = [];
  let listener: ((text: string) => void) | undefined;
  const gate = new ConsoleGate({ sendConsole: (t) => void typed.push(String(t)), onConsole: (l) => { listener = l; return () => { listener = undefined; }; } }, false);
  const shown: string[] = [];
  gate.onOutput((t) => shown.push(t));
  assert.equal(gate.send('ls\n'), false);
  listener!('dropped');
  gate.granted = true;
  assert.equal(gate.send('ls\n'), true);
  listener!('shown');
  assert.deepEqual([typed, shown], [['ls\n'], ['shown']]);

  const screen = new ScreenCaretaker(async () => Buffer.from('png'), false, 'box');
  await assert.rejects(screen.screendump(), (err) => isHostmeError(err, 'screen-denied') && /hostme grant box screen/.test(err.message));
  screen.granted = true;
  assert.equal(String(await screen.screendump()), 'png');
});
