import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { hostmeBin, runCli } from '../testing/published-guest.js';
import { bootNetGuest } from '../testing/net-guest.js';
import type { VmHandle } from '../vm/qemu.js';
import { launchChromium, prepareWeb, publishWebRepo, runTranscript, waitForRunState, waitForTranscript } from '../web/web-fixtures.js';

// The i686 guest in v86 in Chromium joins the hub's network from the run
// page (?net=&token=) and fetches a page by name from a QEMU guest serving
// HTTP on the same network; a page with a wrong token says the network is
// unreachable while the VM keeps running.
const BOOT_TIMEOUT_MS = 420_000;
const prepared = prepareWeb();
if ('skip' in prepared && process.env.CI === 'true') throw new Error(`browser network test cannot run: ${prepared.skip}`);
const skip = 'skip' in prepared ? prepared.skip : false;

let work: string;
let netDir: string;
let hub: ChildProcessWithoutNullStreams | undefined;
let hubUrl = '';
let vm: VmHandle | undefined;
let removeRepo = '';

before(async () => {
  if ('skip' in prepared) return;
  work = await tempDir('hmnet-web-');
  netDir = path.join(work, 'net');
  const { base, repoDir } = await publishWebRepo(prepared.guest);
  removeRepo = base;
  hub = spawn(process.execPath, [hostmeBin, 'serve', repoDir, '--port', '0', '--net', '--net-dir', netDir, '--json', '--quiet']);
  hub.stderr.on('data', (d: Buffer) => process.stderr.write(`hub: ${d.toString()}`));
  let out = '';
  hubUrl = await new Promise<string>((resolve, reject) => {
    hub!.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      try {
        resolve((JSON.parse(out) as { url: string }).url);
      } catch {
        // not complete yet
      }
    });
    hub!.once('exit', (code) => reject(new Error(`hostme serve exited ${code}`)));
  });
});

after(async () => {
  await vm?.shutdown().catch(() => {});
  hub?.kill('SIGKILL');
  if (work) await removeDir(work);
  if (removeRepo) await removeDir(removeRepo);
});

test('a browser guest fetches a page by name from a QEMU guest on the same hub network', { skip, timeout: BOOT_TIMEOUT_MS * 2 }, async () => {
  const issued = await runCli(['net', 'token', 'demo', '--dir', netDir]);
  assert.equal(issued.code, 0, issued.stderr);
  const token = issued.stdout.trim();

  // The QEMU guest "web": busybox httpd serving /etc on port 80.
  const web = await bootNetGuest({ work, network: 'demo', instance: 'web', join: { dir: netDir }, onLaunch: (launched) => (vm = launched) });
  const webIp = web.ip;
  vm = web.vm;
  const since = vm.consoleLength;
  vm.sendConsole('httpd -p 80 -h /etc; echo HTTPD rc=$?\n');
  await vm.waitForConsole(/HTTPD rc=0/, { timeoutMs: 30_000, since });

  const session = await launchChromium();
  try {
    const page = await session.context.newPage();
    await page.goto(`${hubUrl}/i/hello-i686/run?boot=cold&net=demo&token=${encodeURIComponent(token)}&instance=tab1`);
    assert.equal(await waitForRunState(page, ['ready', 'error'], BOOT_TIMEOUT_MS), 'ready', (await page.locator('#message').textContent()) ?? '');
    await waitForTranscript(page, /HOSTME-NET eth0 \d+\.\d+\.\d+\.\d+ tab1\.demo\.hostme/, 60_000);
    const tabIp = await page.evaluate(() => document.body.dataset.netAddress);
    assert.ok(tabIp && tabIp !== webIp, `the tab got its own address (${tabIp})`);
    assert.match((await page.locator('#events').textContent()) ?? '', /On network demo as tab1\.demo\.hostme/);
    await page.locator('#terminal .xterm-helper-textarea').focus();
    await page.keyboard.type('wget -q -O - http://web.demo.hostme/hostname; echo WGET rc=$?\n');
    await waitForTranscript(page, /WGET rc=\d+/, 120_000);
    const transcript = await runTranscript(page);
    assert.match(transcript, /hello\s+WGET rc=0/, transcript.slice(-800));

    // A wrong token: the page says the network is unreachable, and the VM still boots.
    const refused = await session.context.newPage();
    await refused.goto(`${hubUrl}/i/hello-i686/run?boot=cold&net=demo&token=wrong&instance=tab2`);
    await refused.waitForFunction(() => document.body.dataset.netState === 'unreachable', undefined, { timeout: 60_000 });
    assert.match((await refused.locator('#events').textContent()) ?? '', /The network demo is unreachable/);
    await refused.close();
  } finally {
    await session.close();
  }
});
