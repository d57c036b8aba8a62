import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { isIP, type AddressInfo } from 'node:net';
import { createReadStream } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { HostmeError, errorMessage, isHostmeError } from '../errors.js';
import { escapeHtml } from '../server/http-util.js';
import { parseImageLink } from '../runner/link.js';
import { openRepository } from '../repo/repository.js';
import type { HostNode } from './node.js';

const MAX_FORM_BYTES = 16 * 1024;
/** Console scrollback sent when a console opens, and the largest keystroke message accepted. */
const CONSOLE_REPLAY = 64 * 1024;
const CONSOLE_MAX_MESSAGE = 4096;
const MAX_CONSOLES = 16;
const require = createRequire(import.meta.url);
/** Files the console page loads: the bundled script and xterm.js's stylesheet. */
const ASSETS: Record<string, [() => string, string]> = {
  '/node-console.js': [() => join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist-web', 'node-console.js'), 'text/javascript; charset=utf-8'],
  '/xterm.css': [() => join(dirname(require.resolve('@xterm/xterm/package.json')), 'css', 'xterm.css'), 'text/css; charset=utf-8'],
};
const pageCsp = (ws: string) => `default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self'; connect-src 'self' ${ws}; manifest-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'`;
const LAN_COOKIE = 'hostme-lan';

/** Which listener a request came in on: the loopback dashboard, or the LAN listener (paired browsers only). */
interface Listener {
  lan: boolean;
  /** Origins (= Host values) this listener answers to. */
  origins: Set<string>;
  /** WebSocket origins its pages may connect to. */
  ws: string;
}

/** `hostme host --lan ADDR:PORT`: where the LAN listener binds and which page origins may probe it. */
export interface LanOptions {
  address: string;
  port: number;
  /** Page origins (hubs' sites) whose HostMe button may probe /api/hello over the LAN. */
  allowOrigins: string[];
}
const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><rect width="64" height="64" rx="12" fill="#1d4ed8"/><path d="M14 34 32 16l18 18v16H38V38H26v12H14z" fill="#fff"/></svg>`;

/**
 * The node's main screen on http://127.0.0.1:PORT/ (docs/host.md "Dashboard").
 * Only the node's own pages may change anything: every state-changing
 * request is a POST carrying the per-node secret (embedded in those pages)
 * and a same-origin Origin; the Host header must name the dashboard itself
 * (no DNS rebinding). /api/hello is the one cross-origin answer.
 */
export class Dashboard {
  private readonly servers: Server[] = [];
  private loopback: Listener = { lan: false, origins: new Set(), ws: '' };
  private lanOptions?: LanOptions;
  /** The LAN listener's origin once it listens. */
  lanUrl?: string;

  constructor(private readonly node: HostNode) {}

  async listen(port: number, host = '127.0.0.1'): Promise<string> {
    const bound = await this.serve(port, host, this.loopback);
    this.loopback.origins = new Set([`http://127.0.0.1:${bound}`, `http://localhost:${bound}`, `http://[::1]:${bound}`]);
    this.loopback.ws = 'ws://127.0.0.1:* ws://localhost:* ws://[::1]:*';
    return `http://127.0.0.1:${bound}`;
  }

  /**
   * The LAN listener: the same pages on ADDR:PORT for other devices. Every
   * request but /api/hello and /pair needs the pairing cookie (a browser
   * is paired once with the key shown on the loopback dashboard); POSTs and
   * the console also need this listener's own Origin and the node secret.
   */
  async listenLan(options: LanOptions): Promise<string> {
    if (!isIP(options.address) || ['0.0.0.0', '::'].includes(options.address)) throw new HostmeError('usage', `--lan ${options.address}: give this computer's LAN address itself (an IP), not a wildcard: the node checks the Host header against it`);
    const listener: Listener = { lan: true, origins: new Set(), ws: '' };
    const bound = await this.serve(options.port, options.address, listener);
    const origin = `http://${isIP(options.address) === 6 ? `[${options.address}]` : options.address}:${bound}`;
    listener.origins = new Set([origin]);
    listener.ws = origin.replace(/^http/, 'ws');
    this.lanOptions = options;
    this.lanUrl = origin;
    return origin;
  }

  private async serve(port: number, host: string, listener: Listener): Promise<number> {
    const server = createServer((req, res) => {
      this.route(req, res, listener).catch((err: unknown) => {
        const status = isHostmeError(err) ? (err.code === 'forbidden' ? 403 : err.code === 'site-not-found' ? 404 : err.code === 'node-limit' ? 507 : 400) : 500;
        if (!res.headersSent) this.json(res, status, { error: isHostmeError(err) ? err.code : 'internal-error', message: errorMessage(err) });
        else res.destroy();
      });
    });
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.upgrade(req, socket, head, listener));
    server.headersTimeout = 10_000;
    server.requestTimeout = 30_000;
    this.servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, resolve);
    });
    return (server.address() as AddressInfo).port;
  }

  close(): Promise<void> {
    for (const ws of this.wss.clients) ws.terminate();
    return Promise.all(
      this.servers.map(
        (server) =>
          new Promise<void>((resolve) => {
            server.close(() => resolve());
            server.closeAllConnections();
          }),
      ),
    ).then(() => undefined);
  }

  /** A LAN request from a paired browser (its cookie holds the pairing key). */
  private paired(req: IncomingMessage): boolean {
    const cookie = String(req.headers.cookie ?? '')
      .split(';')
      .map((c) => c.trim())
      .find((c) => c.startsWith(`${LAN_COOKIE}=`));
    return cookie !== undefined && sameSecret(cookie.slice(LAN_COOKIE.length + 1), this.node.home.lanKey);
  }

  private async route(req: IncomingMessage, res: ServerResponse, listener: Listener): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://dashboard');
    const method = req.method ?? 'GET';
    if (url.pathname === '/api/hello') return this.hello(req, res, method, listener);
    // DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example.
    if (!listener.origins.has(`http://${req.headers.host ?? ''}`)) throw new HostmeError('forbidden', 'this dashboard answers only to its own address');
    if (listener.lan && url.pathname === '/pair' && method === 'GET') return this.pair(res, url, listener);
    if (listener.lan && !this.paired(req)) {
      if (method !== 'GET') throw new HostmeError('forbidden', 'this browser is not paired with this node (open the pairing link shown on the node\'s own dashboard)');
      return this.pairPage(res, 401, `${url.pathname}${url.search}`, listener);
    }
    if (method === 'GET' || method === 'HEAD') {
      switch (url.pathname) {
        case '/':
          return this.page(res, 'HostMe node', this.indexBody(listener), listener);
        case '/add':
          return this.addPage(res, url.searchParams.get('u') ?? '', listener);
        case '/api/sites':
          return this.json(res, 200, { node: this.node.nodeId, limits: this.node.limits, sites: this.node.status() });
        case '/dashboard.js':
          return this.send(res, 200, 'text/javascript; charset=utf-8', DASHBOARD_JS);
        case '/console':
          return this.consolePage(res, url.searchParams.get('site') ?? '', listener);
        case '/screen':
          return this.screenPage(res, url.searchParams.get('site') ?? '', listener);
        case '/node-console.js':
        case '/xterm.css': {
          const [file, type] = ASSETS[url.pathname]!;
          res.writeHead(200, { 'Content-Type': type, 'X-Content-Type-Options': 'nosniff' });
          createReadStream(file())
            .on('error', () => res.destroy())
            .pipe(res);
          return;
        }
        case '/manifest.webmanifest':
          return this.send(res, 200, 'application/manifest+json', JSON.stringify({ name: 'HostMe node', short_name: 'HostMe', start_url: '/', display: 'standalone', background_color: '#ffffff', theme_color: '#1d4ed8', icons: [{ src: '/icon.svg', sizes: 'any', type: 'image/svg+xml' }] }));
        case '/icon.svg':
          return this.send(res, 200, 'image/svg+xml', ICON_SVG);
        default: {
          const screen = /^\/api\/sites\/([a-z0-9-]{1,63})\/screen\.png$/.exec(url.pathname);
          if (screen) return this.screenPng(res, screen[1]!, url.searchParams.get('secret') ?? '');
          return this.json(res, 404, { error: 'not-found' });
        }
      }
    }
    if (method !== 'POST') return this.json(res, 405, { error: 'method-not-allowed' });
    const form = await this.checkedForm(req, listener);
    const m = /^\/api\/sites(?:\/([a-z0-9-]{1,63})\/(start|stop|remove))?$/.exec(url.pathname);
    if (!m) return this.json(res, 404, { error: 'not-found' });
    if (!m[1]) {
      const entry = await this.describe(form.get('u') ?? '');
      const full = await this.node.cache.refuse(entry.fetchBytes, `${entry.name} not added`);
      if (full) throw new HostmeError('node-limit', full);
      const added = this.node.add({ name: entry.name, repo: entry.repo, image: entry.image, hub: entry.hub, guestPort: entry.guestPort, ...(form.get('invite') ? { invite: form.get('invite')! } : {}) });
      // The confirmation page's form lands on the dashboard; API clients get JSON.
      if (String(req.headers.accept ?? '').includes('text/html')) {
        res.writeHead(303, { Location: '/', 'Cache-Control': 'no-store' });
        res.end();
        return;
      }
      return this.json(res, 201, { added });
    }
    const [, name, action] = m;
    if (action === 'remove') {
      if (!(await this.node.remove(name!))) throw new HostmeError('site-not-found', `no site named "${name}"`);
    } else {
      this.node.setEnabled(name!, action === 'start');
    }
    return this.json(res, 200, { ok: true });
  }

  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: CONSOLE_MAX_MESSAGE });

  /**
   * /api/sites/NAME/console: the VM's serial console over a WebSocket. Same
   * checks as a POST (own Host, own Origin, the node secret in the query:
   * browsers cannot set headers on a WebSocket).
   */
  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, listener: Listener): void {
    const refuse = (status: number, text: string): void => void socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    const url = new URL(req.url ?? '/', 'http://dashboard');
    const m = /^\/api\/sites\/([a-z0-9-]{1,63})\/console$/.exec(url.pathname);
    if (!m) return refuse(404, 'Not Found');
    if (!listener.origins.has(`http://${req.headers.host ?? ''}`) || typeof req.headers.origin !== 'string' || !listener.origins.has(req.headers.origin)) return refuse(403, 'Forbidden');
    if (listener.lan && !this.paired(req)) return refuse(403, 'Forbidden');
    if (!sameSecret(url.searchParams.get('secret') ?? '', this.node.home.secret)) return refuse(403, 'Forbidden');
    const vm = this.node.vm(m[1]!)?.vm;
    if (!vm) return refuse(409, 'Conflict');
    if (this.wss.clients.size >= MAX_CONSOLES) return refuse(503, 'Service Unavailable');
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      ws.send(vm.console.slice(-CONSOLE_REPLAY));
      const off = vm.onConsole((text) => ws.send(text));
      void vm.exited.then(() => ws.close(1001, 'the VM stopped'));
      ws.on('message', (data: Buffer) => vm.sendConsole(new Uint8Array(data)));
      ws.on('close', off);
      ws.on('error', off);
    });
  }

  /** The VM's VGA screen as PNG (the secret in the query, as for the console: an <img> cannot send headers). */
  private async screenPng(res: ServerResponse, site: string, secret: string): Promise<void> {
    if (!sameSecret(secret, this.node.home.secret)) throw new HostmeError('forbidden', 'missing or wrong node secret');
    const vm = this.node.vm(site);
    const png = vm?.screen();
    if (!png) return this.json(res, vm?.vm ? 404 : 409, { error: vm?.vm ? 'no-screen' : 'not-running', message: vm?.vm ? 'this VM has no display (hostme host --vga gives site VMs one)' : 'the site has no VM running' });
    const bytes = await png;
    res.writeHead(200, { 'Content-Type': 'image/png', 'Content-Length': bytes.length, 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' });
    res.end(bytes);
  }

  private screenPage(res: ServerResponse, site: string, listener: Listener): void {
    if (!/^[a-z0-9-]{1,63}$/.test(site)) return this.json(res, 404, { error: 'not-found' });
    this.page(
      res,
      `${site} screen — HostMe node`,
      `<p><a href="/">Sites</a> · <strong>${escapeHtml(site)}</strong> screen <span id="screen-status">loading…</span> <button type="button" id="fullscreen">Fullscreen</button> <a href="/console?site=${escapeHtml(site)}">console</a></p>
<img id="screen" alt="${escapeHtml(site)} screen" data-site="${escapeHtml(site)}" style="max-width:100%;image-rendering:pixelated;background:#000">
<meta name="hostme-secret" content="${escapeHtml(this.node.home.secret)}">`,
      listener,
    );
  }

  private consolePage(res: ServerResponse, site: string, listener: Listener): void {
    if (!/^[a-z0-9-]{1,63}$/.test(site)) return this.json(res, 404, { error: 'not-found' });
    this.page(
      res,
      `${site} console — HostMe node`,
      `<p><a href="/">Sites</a> · <strong>${escapeHtml(site)}</strong> serial console <span id="console-status">connecting…</span> <button type="button" id="fullscreen">Fullscreen</button></p>
<div id="terminal" data-site="${escapeHtml(site)}" style="height:80vh"></div>
<meta name="hostme-secret" content="${escapeHtml(this.node.home.secret)}">`,
      listener,
      ['<link rel="stylesheet" href="/xterm.css">', '<script src="/node-console.js" type="module"></script>'],
    );
  }

  /**
   * The node probe the HostMe button makes (CORS + Private Network Access).
   * On loopback it answers any page; on the LAN listener only the page
   * origins given with --lan-origin may read it.
   */
  private hello(req: IncomingMessage, res: ServerResponse, method: string, listener: Listener): void {
    res.setHeader('Vary', 'Origin');
    const origin = typeof req.headers.origin === 'string' ? req.headers.origin : '';
    const allowed = !listener.lan || this.lanOptions?.allowOrigins.includes(origin) === true;
    if (allowed) res.setHeader('Access-Control-Allow-Origin', listener.lan ? origin : '*');
    if (method === 'OPTIONS') {
      res.writeHead(204, allowed ? { 'Access-Control-Allow-Methods': 'GET', 'Access-Control-Allow-Private-Network': 'true', 'Access-Control-Max-Age': '600' } : {});
      res.end();
      return;
    }
    this.json(res, 200, { hostme: 'node', version: 1, node: this.node.nodeId, add: '/add?u=' });
  }

  /** Same-origin POST with the node's secret, or refused. */
  private async checkedForm(req: IncomingMessage, listener: Listener): Promise<URLSearchParams> {
    const origin = req.headers.origin;
    if (typeof origin !== 'string' || !listener.origins.has(origin)) throw new HostmeError('forbidden', 'cross-origin requests cannot change this node');
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin') throw new HostmeError('forbidden', 'cross-site requests cannot change this node');
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_FORM_BYTES) throw new HostmeError('usage', 'form too large');
      chunks.push(chunk);
    }
    const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
    if (!sameSecret(form.get('secret') ?? String(req.headers['x-hostme-secret'] ?? ''), this.node.home.secret)) throw new HostmeError('forbidden', 'missing or wrong node secret: confirm on the node\'s own page');
    return form;
  }

  /** What a link would add: the site, its hub, publisher key and resources (from the signed manifest). */
  private async describe(link: string) {
    if (!link || link.length > 2048) throw new HostmeError('usage', 'give the site\'s link: /add?u=LINK');
    const parsed = parseImageLink(link);
    if (!/^https?:\/\//.test(parsed.repo)) throw new HostmeError('usage', 'a hosted site comes from an http(s) hub');
    const image = await openRepository(parsed.repo).loadImage(parsed.name, parsed.version);
    const { manifest } = image;
    return {
      name: manifest.name,
      image: parsed.name,
      repo: parsed.repo,
      hub: new URL(parsed.repo).origin,
      guestPort: 80,
      keyId: image.signer.keyId,
      memoryMiB: manifest.hardware.memoryMiB,
      cpus: manifest.hardware.cpus,
      diskBytes: manifest.disks.reduce((sum, d) => sum + d.size, 0),
      /** The most this site can bring into the cache: what its publisher stored (or the disks' size), kernel and initrd. */
      fetchBytes: manifest.disks.reduce((sum, d) => sum + (d.storedBytes ?? d.size), 0) + (manifest.boot.mode === 'direct' ? manifest.boot.kernel.size + (manifest.boot.initrd?.size ?? 0) : 0),
      description: manifest.description ?? '',
    };
  }

  private async addPage(res: ServerResponse, link: string, listener: Listener): Promise<void> {
    let body: string;
    try {
      const d = await this.describe(link);
      body = `<h1>Host ${escapeHtml(d.name)} on this computer?</h1>
<p>${escapeHtml(d.description)}</p>
<table>
<tr><th>Site</th><td>${escapeHtml(d.name)}</td></tr>
<tr><th>Served through</th><td>${escapeHtml(d.hub)}</td></tr>
<tr><th>Image</th><td>${escapeHtml(d.repo)} ${escapeHtml(d.image)}</td></tr>
<tr><th>Publisher key</th><td><code>${escapeHtml(d.keyId)}</code></td></tr>
<tr><th>Resources</th><td>${d.memoryMiB} MiB memory, ${d.cpus} CPU, disk up to ${(d.diskBytes / 2 ** 20).toFixed(0)} MiB (at most ${(d.fetchBytes / 2 ** 20).toFixed(1)} MiB fetched, on demand; this node's cache limit is ${this.node.limits.maxCacheMiB} MiB)</td></tr>
</table>
<form method="post" action="/api/sites" id="confirm">
<input type="hidden" name="u" value="${escapeHtml(link)}">
<input type="hidden" name="secret" value="${escapeHtml(this.node.home.secret)}">
<button type="submit" id="host-confirm">Host this site</button> <a href="/">Cancel</a>
</form>`;
    } catch (err) {
      body = `<h1>Cannot host this link</h1><p>${escapeHtml(errorMessage(err))}</p><p><a href="/">Back</a></p>`;
    }
    this.page(res, 'Host a site — HostMe node', body, listener);
  }

  private indexBody(listener: Listener): string {
    const pairing = this.lanUrl && !listener.lan ? `<p id="lan-pairing">Other devices on your network reach this node at <code>${escapeHtml(this.lanUrl)}</code> once paired: open <a id="lan-pair-link" href="${escapeHtml(`${this.lanUrl}/pair?key=${encodeURIComponent(this.node.home.lanKey)}`)}">this pairing link</a> on each of them (it is a password: share it only with your devices).</p>` : '';
    return `<h1>HostMe node <small id="node"></small></h1>${pairing}
<p>Sites this computer hosts. Each runs in its own virtual machine and is served to the web through its hub.</p>
<table id="sites"><thead><tr><th>Site</th><th>State</th><th>Address</th><th>Uptime</th><th>Requests</th><th>Fetched / cached</th><th>Hub</th><th></th></tr></thead><tbody></tbody></table>
<meta name="hostme-secret" content="${escapeHtml(this.node.home.secret)}">`;
  }

  /** /pair?key=K on the LAN listener: the right key sets the pairing cookie and goes on to `next`. */
  private pair(res: ServerResponse, url: URL, listener: Listener): void {
    const next = url.searchParams.get('next') ?? '/';
    const safeNext = /^\/(?![/\\])[\x21-\x7e]{0,2048}$/.test(next) ? next : '/';
    if (!sameSecret(url.searchParams.get('key') ?? '', this.node.home.lanKey)) return this.pairPage(res, url.searchParams.has('key') ? 403 : 401, safeNext, listener);
    res.writeHead(303, {
      Location: safeNext,
      // Lax: sent when the HostMe button navigates here from the site's page; HttpOnly: no script reads it.
      'Set-Cookie': `${LAN_COOKIE}=${this.node.home.lanKey}; Path=/; HttpOnly; SameSite=Lax; Max-Age=31536000`,
      'Cache-Control': 'no-store',
    });
    res.end();
  }

  private pairPage(res: ServerResponse, status: number, next: string, listener: Listener): void {
    this.page(
      res,
      'Pair with this HostMe node',
      `<h1>This browser is not paired with this HostMe node</h1>
<p>On the computer running the node, open its dashboard (<code>http://127.0.0.1:7480/</code>) and open its pairing link on this device, or paste the key here:</p>
<form method="get" action="/pair" id="pair"><input type="hidden" name="next" value="${escapeHtml(next)}"><input name="key" id="pair-key" size="48" autocomplete="off"> <button type="submit">Pair</button></form>`,
      listener,
      [],
      status,
    );
  }

  private page(res: ServerResponse, title: string, body: string, listener: Listener, head: string[] = ['<script src="/dashboard.js" defer></script>'], status = 200): void {
    const html = `<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>${escapeHtml(title)}</title><link rel="manifest" href="/manifest.webmanifest"><link rel="icon" href="/icon.svg">
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}table{border-collapse:collapse}td,th{padding:.3rem .8rem;border-bottom:1px solid #ddd;text-align:left}button{margin-right:.3rem}</style>
${head.join('')}</head><body>${body}</body></html>`;
    res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Security-Policy': pageCsp(listener.ws), 'X-Frame-Options': 'DENY', 'Cache-Control': 'no-store', 'Referrer-Policy': 'same-origin' });
    res.end(html);
  }

  private send(res: ServerResponse, status: number, type: string, body: string): void {
    res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'X-Content-Type-Options': 'nosniff' });
    res.end(body);
  }

  private json(res: ServerResponse, status: number, value: unknown): void {
    res.setHeader('Cache-Control', 'no-store');
    this.send(res, status, 'application/json', JSON.stringify(value));
  }
}

/** Constant-time comparison of a presented secret with the real one. */
function sameSecret(given: string, secret: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(secret);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The dashboard's script: polls /api/sites, start/stop/remove with the node secret. */
const DASHBOARD_JS = `
const secret = document.querySelector('meta[name=hostme-secret]')?.content;
const body = document.querySelector('#sites tbody');
const fmt = (n) => n > 1048576 ? (n / 1048576).toFixed(1) + ' MiB' : n > 1024 ? (n / 1024).toFixed(0) + ' KiB' : n + ' B';
const up = (ms) => ms ? Math.floor(ms / 1000) + ' s' : '';
async function act(name, action) {
  await fetch('/api/sites/' + name + '/' + action, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'secret=' + encodeURIComponent(secret) });
  refresh();
}
async function refresh() {
  const r = await fetch('/api/sites');
  const d = await r.json();
  document.querySelector('#node').textContent = d.node;
  body.replaceChildren(...d.sites.map((s) => {
    const tr = document.createElement('tr');
    tr.dataset.site = s.name;
    for (const text of [s.name, s.state + (s.error ? ' (' + s.error + ')' : ''), s.address || '', up(s.uptimeMs), String(s.requests), fmt(s.bytesFetched) + ' / ' + fmt(s.bytesFromCache), s.hub + (s.hubConnected ? ' ✓' : '')]) {
      const td = document.createElement('td'); td.textContent = text; tr.append(td);
    }
    const td = document.createElement('td');
    const link = document.createElement('a'); link.href = '/console?site=' + encodeURIComponent(s.name); link.textContent = 'console'; link.className = 'console'; td.append(link, ' ');
    if (s.screen) { const sl = document.createElement('a'); sl.href = '/screen?site=' + encodeURIComponent(s.name); sl.textContent = 'screen'; sl.className = 'screen'; td.append(sl, ' '); }
    for (const a of [s.enabled ? 'stop' : 'start', 'remove']) {
      const b = document.createElement('button'); b.textContent = a; b.onclick = () => act(s.name, a); td.append(b);
    }
    tr.append(td);
    return tr;
  }));
}
if (body) { refresh(); setInterval(refresh, 2000); }
// The screen page: a new screendump about once a second, swapped in when loaded.
const screen = document.getElementById('screen');
if (screen) {
  const status = document.getElementById('screen-status');
  const src = () => '/api/sites/' + encodeURIComponent(screen.dataset.site) + '/screen.png?secret=' + encodeURIComponent(secret) + '&t=' + Date.now();
  const next = () => {
    const img = new Image();
    img.onload = () => { screen.src = img.src; document.body.dataset.screen = 'shown'; status.textContent = img.naturalWidth + '×' + img.naturalHeight; setTimeout(next, 1000); };
    img.onerror = () => { status.textContent = 'no screen (VM stopped?)'; setTimeout(next, 3000); };
    img.src = src();
  };
  next();
  document.getElementById('fullscreen').onclick = () => screen.requestFullscreen();
}
`;
