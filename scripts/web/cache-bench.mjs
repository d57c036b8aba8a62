#!/usr/bin/env node
// Micro-benchmark of the browser's persistent stores for hostme's chunk cache:
// write then read 200 x 256 KiB with the Cache API, IndexedDB and OPFS, in
// headless Chromium (playwright-core + /usr/bin/chromium), on a loopback origin.
// Usage: node scripts/web/cache-bench.mjs [--runs N]   (prints a JSON summary)
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1] || 3) || 3;
const server = http.createServer((req, res) => { res.setHeader('content-type', 'text/html'); res.end('<!doctype html><title>bench</title>'); });
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const url = `http://127.0.0.1:${server.address().port}/`;
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'hostme-bench-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.HOSTME_CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--no-first-run', '--disable-sync', '--disable-quic'],
});
const browser = context.browser() ?? { version: () => 'unknown' };
try {
  const page = await context.newPage();
  await page.goto(url);
  const results = [];
  for (let run = 0; run < runs; run++) {
    results.push(await page.evaluate(async () => {
      const N = 200, SIZE = 256 * 1024;
      const chunks = [];
      for (let i = 0; i < N; i++) {
        const b = new Uint8Array(SIZE);
        for (let j = 0; j < SIZE; j += 65536) crypto.getRandomValues(b.subarray(j, j + 65536));
        chunks.push(b);
      }
      const key = (i) => `k${i.toString().padStart(4, '0')}`;
      const time = async (fn) => { const t = performance.now(); await fn(); return performance.now() - t; };
      const out = {};
      // Cache API
      await caches.delete('bench');
      const cache = await caches.open('bench');
      out.cacheApi = {
        write: await time(() => Promise.all(chunks.map((c, i) => cache.put(new Request(`/${key(i)}`), new Response(c))))),
        read: await time(() => Promise.all(chunks.map(async (_c, i) => new Uint8Array(await (await cache.match(`/${key(i)}`)).arrayBuffer())))),
      };
      await caches.delete('bench');
      // IndexedDB
      await new Promise((r) => { const d = indexedDB.deleteDatabase('bench'); d.onsuccess = d.onerror = r; });
      const db = await new Promise((res, rej) => {
        const o = indexedDB.open('bench', 1);
        o.onupgradeneeded = () => o.result.createObjectStore('c');
        o.onsuccess = () => res(o.result); o.onerror = () => rej(o.error);
      });
      const tx = (mode, fn) => new Promise((res, rej) => { const t = db.transaction('c', mode); const r = fn(t.objectStore('c')); t.oncomplete = () => res(r); t.onerror = () => rej(t.error); });
      out.indexedDB = {
        write: await time(() => Promise.all(chunks.map((c, i) => tx('readwrite', (s) => s.put(c, key(i)))))),
        read: await time(() => Promise.all(chunks.map((_c, i) => new Promise((res, rej) => { const r = db.transaction('c').objectStore('c').get(key(i)); r.onsuccess = () => res(r.result); r.onerror = () => rej(r.error); })))),
      };
      db.close();
      await new Promise((r) => { const d = indexedDB.deleteDatabase('bench'); d.onsuccess = d.onerror = r; });
      // OPFS (main thread: createWritable; no sync access handles outside workers)
      const root = await navigator.storage.getDirectory();
      try { await root.removeEntry('bench', { recursive: true }); } catch { /* absent */ }
      const dir = await root.getDirectoryHandle('bench', { create: true });
      out.opfs = {
        write: await time(() => Promise.all(chunks.map(async (c, i) => { const f = await dir.getFileHandle(key(i), { create: true }); const w = await f.createWritable(); await w.write(c); await w.close(); }))),
        read: await time(() => Promise.all(chunks.map(async (_c, i) => new Uint8Array(await (await (await dir.getFileHandle(key(i))).getFile()).arrayBuffer())))),
      };
      await root.removeEntry('bench', { recursive: true });
      return out;
    }));
  }
  const summary = {};
  for (const store of Object.keys(results[0])) {
    for (const op of ['write', 'read']) {
      const xs = results.map((r) => r[store][op]).sort((a, b) => a - b);
      summary[store] = { ...summary[store], [`${op}MsMedian`]: Math.round(xs[Math.floor(xs.length / 2)]), [`${op}MsAll`]: xs.map(Math.round) };
    }
  }
  console.log(JSON.stringify({ chunks: 200, chunkBytes: 262144, runs, chromium: browser.version(), cpus: os.cpus().length, loadavg: os.loadavg().map((x) => +x.toFixed(2)), summary }, null, 2));
} finally {
  await context.close();
  server.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
