import type { IncomingMessage, ServerResponse } from 'node:http';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HttpError, escapeHtml as e, publicBaseUrl, sendHtml } from './http-util.js';
import { handleOpenLink, OPEN_PATH } from './open-link.js';
import { AssetCache } from './asset-cache.js';
import { snapshotWarmPaths } from './warm-list.js';
import { summarize, type RepoView } from './repo-view.js';

/**
 * The browser side of `hostme serve` (docs/web.md):
 *   GET /i/NAME/run          the run page (v86 + xterm.js, streams the image through the browser reader)
 *   GET /i/NAME/VERSION/run  the run page of one version
 *   GET /open?u=LINK         the web+hostme: protocol handler target (open-link.ts)
 *   GET /button.js           the embeddable HostMe button
 *   GET /_hostme/ASSET       the run page's static assets (bundle, v86, BIOS, CSS)
 * handleWebRoute answers those and returns false for anything else.
 */

const require = createRequire(import.meta.url);
const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SEABIOS_DIR = process.env.HOSTME_SEABIOS_DIR ?? '/usr/share/seabios';

function v86File(name: string): string {
  return path.join(path.dirname(require.resolve('v86')), name);
}

/** Asset name -> [file, content type]. Resolved lazily: a missing asset is a 404 with a hint, not a crash. */
const ASSETS: Record<string, () => [string, string]> = {
  'run.js': () => [path.join(PACKAGE_ROOT, 'dist-web/run.js'), 'text/javascript; charset=utf-8'],
  'handler.js': () => [path.join(PACKAGE_ROOT, 'dist-web/handler.js'), 'text/javascript; charset=utf-8'],
  'libv86.mjs': () => [v86File('libv86.mjs'), 'text/javascript; charset=utf-8'],
  'v86.wasm': () => [v86File('v86.wasm'), 'application/wasm'],
  'bios.bin': () => [path.join(SEABIOS_DIR, 'bios.bin'), 'application/octet-stream'],
  'vgabios.bin': () => [path.join(SEABIOS_DIR, 'vgabios-stdvga.bin'), 'application/octet-stream'],
  'xterm.css': () => [path.join(path.dirname(require.resolve('@xterm/xterm/package.json')), 'css/xterm.css'), 'text/css; charset=utf-8'],
};

function v86Version(): string {
  try {
    return (require('v86/package.json') as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

const assetCache = new AssetCache();

async function serveAsset(req: IncomingMessage, res: ServerResponse, name: string): Promise<void> {
  const entry = ASSETS[name];
  if (!entry) throw new HttpError(404, 'not-found', `no asset ${name}`);
  const [file, type] = entry();
  if (!existsSync(file)) {
    const hint = name === 'run.js' || name === 'handler.js' ? ' (run scripts/build-web.sh)' : name.endsWith('.bin') ? ' (install the Debian package seabios)' : '';
    throw new HttpError(404, 'asset-missing', `${name} is not installed on this server${hint}`);
  }
  await assetCache.send(req, res, file, type);
}

const RUN_STYLE = `
html,body{height:100%;margin:0}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2330;background:#f4f5f8;display:flex;flex-direction:column}
header{display:flex;gap:.8rem;align-items:center;padding:.5rem 1rem;background:#1d2330;color:#f3f5f9;flex-wrap:wrap}
header h1{font-size:1rem;margin:0;font-weight:600}
header a{color:#9cc0ff}
header .spacer{flex:1}
button{font:inherit;padding:.25rem .8rem;border-radius:4px;border:1px solid #8891a5;background:#fff;color:#1d2330;cursor:pointer}
button:focus-visible{outline:3px solid #2456c9;outline-offset:2px}
button[disabled]{opacity:.5;cursor:default}
#status{padding:.4rem 1rem;display:flex;gap:1rem;align-items:center;flex-wrap:wrap;border-bottom:1px solid #d6dae3;background:#fff}
#status progress{width:14rem}
#message{padding:.6rem 1rem;display:none}
#message.show{display:block}
#message.error{background:#fde8e8;color:#7a1010;border-bottom:1px solid #e6b4b4}
#message.info{background:#e8f0fd;border-bottom:1px solid #b4c8e6}
#message pre{background:#1d2330;color:#f3f5f9;padding:.6rem .8rem;border-radius:4px;overflow-x:auto;user-select:all}
#events{padding:0 1rem;margin:0;color:#7a1010;font-size:.85rem}
#grants-box{padding:0 1rem;font-size:.85rem}#grants{margin:0}
#terminal{flex:1;min-height:18rem;background:#000;padding:.3rem}
#terminal[hidden],#screen[hidden]{display:none}
#screen{flex:1;min-height:18rem;background:#000;color:#aaa;padding:.3rem;overflow:auto;display:flex;justify-content:center;align-items:flex-start}
#screen:focus-visible{outline:3px solid #2456c9;outline-offset:-3px}
#screen>div{white-space:pre;font:14px/16px "DejaVu Sans Mono",Consolas,monospace}
#screen>canvas{display:none;image-rendering:pixelated}
#screen:fullscreen{align-items:center}
.views{display:inline-flex}
.views button{border-radius:0}
.views button:first-child{border-radius:4px 0 0 4px}
.views button:last-child{border-radius:0 4px 4px 0;border-left:0}
.views button[aria-pressed="true"]{background:#2456c9;color:#fff;border-color:#2456c9}
button.link{background:none;border:0;color:#9cc0ff;text-decoration:underline;padding:.25rem .2rem}
button.link[hidden]{display:none}
#handler-status{font-size:.85rem;color:#cfd6e4}
noscript{display:block;padding:1rem}
`;

/** `warm`: the snapshot's objects, which the page fetches at once, before the manifest is verified (src/web/warm.ts). */
/** `swarm`: NAME@VERSION whose WebRTC swarm the page joins through this hub (public images on an open hub only). */
export function renderRunPage(args: { name: string; version: string; arch: string; runCommand: string; v86Version: string; desktopLink: string; warm?: string[]; swarm?: string }): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${e(args.name)} - run in the browser - hostme</title>
<link rel="stylesheet" href="/_hostme/xterm.css">
<style>${RUN_STYLE}</style>
</head>
<body data-state="loading" data-image="${e(args.name)}" data-arch="${e(args.arch)}" data-run-command="${e(args.runCommand)}" data-desktop-link="${e(args.desktopLink)}" data-v86-version="${e(args.v86Version)}" data-version="${e(args.version)}"${args.warm?.length ? ` data-hostme-warm="${e(args.warm.join(' '))}"` : ''}${args.swarm ? ` data-swarm="${e(args.swarm)}"` : ''}>
<header>
<h1>${e(args.name)}</h1>
<a href="/i/${e(encodeURIComponent(args.name))}">about this image</a>
<button type="button" id="register-handler" class="link" hidden>Open web+hostme: links with this site</button>
<span id="handler-status" role="status"></span>
<span class="spacer"></span>
<span class="views" role="group" aria-label="Show">
<button type="button" id="view-console" aria-pressed="true" aria-controls="terminal" disabled>Console</button>
<button type="button" id="view-screen" aria-pressed="false" aria-controls="screen" disabled>Screen</button>
</span>
<button type="button" id="stop" disabled>Stop</button>
<button type="button" id="fullscreen" disabled>Fullscreen</button>
</header>
<div id="status" role="status" aria-live="polite">
<progress id="progress" aria-label="boot files loaded"></progress>
<span id="progress-text">Starting…</span>
</div>
<div id="message" aria-live="assertive"></div>
<ul id="events" aria-label="notices" aria-live="polite"></ul>
<details id="grants-box"><summary>Grants</summary><ul id="grants" aria-label="grants"></ul></details>
<div id="terminal" role="region" aria-label="serial console"></div>
<div id="screen" role="region" aria-label="VGA screen: while it has focus, keys go to the guest" tabindex="0" hidden><div></div><canvas></canvas></div>
<noscript>This page runs the virtual machine with JavaScript and WebAssembly, which are disabled here.
Run it on your computer instead: <code>${e(args.runCommand)}</code></noscript>
<script type="module" src="/_hostme/run.js"></script>
</body>
</html>
`;
}

// The run page fetches the repository and its mirrors (anywhere: connect-src * data:;
// data: for the zstd decoder, which loads its inline WebAssembly through fetch)
// and compiles v86's WebAssembly; v86 runs its timer in a blob: worker.
const RUN_PAGE_CSP =
  "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; style-src 'self' 'unsafe-inline'; connect-src * data:; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

function sendRunHtml(req: IncomingMessage, res: ServerResponse, status: number, html: string): void {
  sendHtml(req, res, status, html, RUN_PAGE_CSP);
}

/** The embeddable button script; the server's own origin is baked in from the request. */
export function renderButtonScript(origin: string): string {
  return `// hostme button: <script src="${origin}/button.js" data-image="NAME" async></script>
(function () {
  var ORIGIN = ${JSON.stringify(origin)};
  var scripts = document.querySelectorAll('script[data-image]');
  var script = document.currentScript;
  var targets = [];
  if (script && script.getAttribute('data-image')) targets.push(script);
  else for (var i = 0; i < scripts.length; i++) if (/\\/button\\.js(\\?|$)/.test(scripts[i].src) && !scripts[i].hasAttribute('data-hostme-done')) targets.push(scripts[i]);
  var n = 0;
  targets.forEach(function (s) {
    if (s.hasAttribute('data-hostme-done')) return;
    s.setAttribute('data-hostme-done', '');
    var name = s.getAttribute('data-image') || '';
    if (!/^[a-z0-9][a-z0-9._-]{0,63}$/.test(name)) { console.warn('hostme button: bad data-image', name); return; }
    var id = 'hostme-menu-' + (++n) + '-' + Math.random().toString(36).slice(2, 8);
    var runUrl = ORIGIN + '/i/' + encodeURIComponent(name) + '/run';
    var desktop = 'hostme+' + ORIGIN + '/i/' + encodeURIComponent(name);
    var host = document.createElement('span');
    host.className = 'hostme-button';
    var root = host.attachShadow ? host.attachShadow({ mode: 'open' }) : host;
    var style = document.createElement('style');
    style.textContent = ':host{display:inline-block;position:relative;font:14px/1.4 system-ui,sans-serif}' +
      '.b{display:inline-flex;align-items:center;gap:.4em;padding:.45em 1em;border-radius:6px;border:0;background:#2456c9;color:#fff;font:inherit;font-weight:600;cursor:pointer}' +
      '.b:hover{background:#1b44a3}.b:focus-visible,a:focus-visible{outline:3px solid #f0a500;outline-offset:2px}' +
      '.m{position:absolute;z-index:2147483647;left:0;top:calc(100% + 4px);min-width:16em;background:#fff;border:1px solid #c5cbd8;border-radius:6px;box-shadow:0 4px 16px rgba(0,0,0,.15);padding:.3em;margin:0;list-style:none}' +
      '.m[hidden]{display:none}.m a{display:block;padding:.45em .8em;color:#1d2330;text-decoration:none;border-radius:4px}' +
      '.m a:hover,.m a:focus{background:#e8f0fd}.m small{display:block;color:#5d6678}';
    var button = document.createElement('button');
    button.type = 'button';
    button.className = 'b';
    button.textContent = 'HostMe: run ' + name;
    button.setAttribute('aria-haspopup', 'menu');
    button.setAttribute('aria-expanded', 'false');
    button.setAttribute('aria-controls', id);
    var menu = document.createElement('ul');
    menu.className = 'm';
    menu.id = id;
    menu.hidden = true;
    menu.setAttribute('role', 'menu');
    menu.setAttribute('aria-label', 'Run ' + name);
    function item(href, label, hint, attrs) {
      var li = document.createElement('li');
      li.setAttribute('role', 'none');
      var a = document.createElement('a');
      a.href = href;
      a.setAttribute('role', 'menuitem');
      a.tabIndex = -1;
      a.textContent = label;
      var small = document.createElement('small');
      small.textContent = hint;
      a.appendChild(small);
      for (var k in attrs) a.setAttribute(k, attrs[k]);
      li.appendChild(a);
      menu.appendChild(li);
      return a;
    }
    var items = [
      item(runUrl, 'Run here, in this tab', 'in your browser (v86, i686 images)', { 'data-hostme': 'run-here', rel: 'noopener' }),
      item(desktop, 'Run on my computer', 'opens hostme run (must be installed)', { 'data-hostme': 'run-local' }),
    ];
    function open(focusIndex) {
      menu.hidden = false;
      button.setAttribute('aria-expanded', 'true');
      items[focusIndex || 0].focus();
    }
    function close(refocus) {
      if (menu.hidden) return;
      menu.hidden = true;
      button.setAttribute('aria-expanded', 'false');
      if (refocus) button.focus();
    }
    button.addEventListener('click', function () { menu.hidden ? open(0) : close(false); });
    button.addEventListener('keydown', function (ev) {
      if (ev.key === 'ArrowDown') { ev.preventDefault(); open(0); }
      if (ev.key === 'ArrowUp') { ev.preventDefault(); open(items.length - 1); }
    });
    menu.addEventListener('keydown', function (ev) {
      var at = items.indexOf(ev.target);
      if (ev.key === 'Escape') { ev.preventDefault(); close(true); }
      else if (ev.key === 'ArrowDown') { ev.preventDefault(); items[(at + 1) % items.length].focus(); }
      else if (ev.key === 'ArrowUp') { ev.preventDefault(); items[(at + items.length - 1) % items.length].focus(); }
      else if (ev.key === 'Home') { ev.preventDefault(); items[0].focus(); }
      else if (ev.key === 'End') { ev.preventDefault(); items[items.length - 1].focus(); }
      else if (ev.key === 'Tab') { close(false); }
    });
    document.addEventListener('click', function (ev) { if (!host.contains(ev.target)) close(false); });
    root.appendChild(style);
    root.appendChild(button);
    root.appendChild(menu);
    s.parentNode.insertBefore(host, s.nextSibling);
  });
})();
`;
}

/**
 * Answers the web routes; returns false when `segments` is none of them.
 * One call from server.ts's router.
 */
export async function handleWebRoute(
  req: IncomingMessage,
  res: ServerResponse,
  segments: string[],
  view: RepoView,
  fallbackHost: string,
  /** The hub's answer: may the run page of NAME join its public swarm (absent: no hub, no swarm). */
  publicSwarm?: (name: string) => Promise<boolean>,
): Promise<boolean> {
  if (segments.length === 2 && segments[0] === '_hostme') {
    await serveAsset(req, res, segments[1]!);
    return true;
  }
  if (segments.length === 1 && segments[0] === 'button.js') {
    const body = Buffer.from(renderButtonScript(publicBaseUrl(req, fallbackHost)));
    res.statusCode = 200;
    res.setHeader('Content-Type', 'text/javascript; charset=utf-8');
    res.setHeader('Cache-Control', 'public, max-age=300');
    res.setHeader('Content-Length', body.length);
    res.end(req.method === 'HEAD' ? undefined : body);
    return true;
  }
  if (segments.length === 1 && segments[0] === OPEN_PATH.slice(1)) {
    await handleOpenLink(req, res, view, publicBaseUrl(req, fallbackHost));
    return true;
  }
  const pinnedVersion = segments.length === 4 ? segments[2] : undefined;
  if ((segments.length === 3 || segments.length === 4) && segments[0] === 'i' && segments[segments.length - 1] === 'run') {
    const base = publicBaseUrl(req, fallbackHost);
    const { image, listing } = await view.image(segments[1]!, pinnedVersion);
    const s = summarize(image, listing, base, pinnedVersion !== undefined);
    const desktopLink = `hostme+${base}/i/${encodeURIComponent(s.name)}`;
    const swarm = publicSwarm && (await publicSwarm(s.name)) ? `${s.name}@${s.version}` : undefined;
    sendRunHtml(req, res, 200, renderRunPage({ name: s.name, version: s.version, arch: s.hardware.arch, runCommand: s.runCommand, v86Version: v86Version(), desktopLink, warm: await snapshotWarmPaths(view, image.manifest), swarm }));
    return true;
  }
  return false;
}
