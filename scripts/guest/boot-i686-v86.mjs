#!/usr/bin/env node
// Boots the i686 reference guest in v86 under Node and waits for HOSTME-READY
// on the serial console. Usage: node scripts/guest/boot-i686-v86.mjs [GUEST_DIR] [--timeout S]
// Prints the boot time; exits non-zero on timeout.
import { V86 } from 'v86';
import { createRequire } from 'node:module';
import path from 'node:path';
import fs from 'node:fs';

const require = createRequire(import.meta.url);
const v86Dir = path.dirname(require.resolve('v86'));
const args = process.argv.slice(2);
const tIdx = args.indexOf('--timeout');
const timeoutS = tIdx >= 0 ? Number(args.splice(tIdx, 2)[1]) : 180;
const dir = path.resolve(args[0] ?? '.cache/guest/hello-i686');
const guest = JSON.parse(fs.readFileSync(path.join(dir, 'guest.json'), 'utf8'));
const started = Date.now();
const emulator = new V86({
  wasm_path: path.join(v86Dir, 'v86.wasm'),
  bios: { url: '/usr/share/seabios/bios.bin' },
  vga_bios: { url: '/usr/share/seabios/vgabios-stdvga.bin' },
  bzimage: { url: guest.kernel },
  initrd: { url: guest.initrd },
  hda: { url: guest.disk },
  cmdline: guest.cmdline,
  memory_size: guest.memoryMiB * 1024 * 1024,
  vga_memory_size: 2 * 1024 * 1024,
  autostart: true,
  disable_keyboard: true,
  disable_mouse: true,
});
let out = '';
const timer = setTimeout(() => {
  process.stderr.write(`\n--- timeout after ${timeoutS} s; serial so far:\n${out}\n`);
  process.exit(1);
}, timeoutS * 1000);
emulator.add_listener('serial0-output-byte', (byte) => {
  const c = String.fromCharCode(byte);
  out += c;
  if (process.env.HOSTME_V86_ECHO) process.stderr.write(c);
  if (out.includes('HOSTME-READY')) {
    clearTimeout(timer);
    console.log(`HOSTME-READY after ${((Date.now() - started) / 1000).toFixed(1)} s`);
    emulator.destroy();
    process.exit(0);
  }
});
