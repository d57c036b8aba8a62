import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RepoListing } from '../repo/layout.js';
import { HttpError, escapeHtml as e, formatBytes, publicBaseUrl, sendHtml } from './http-util.js';
import { summarize, type ImageSummary, type RepoView } from './repo-view.js';
import { REFERENCE_MEDIA_TYPE, makeReference } from '../runner/reference-file.js';
import { RUN_PAGE_ASSETS, snapshotWarmPaths } from './warm-list.js';

const STYLE = `
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1d2330;background:#fbfbfd}
h1{font-size:1.6rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin-top:1.8rem}
a{color:#2456c9}.muted{color:#5d6678}
table{border-collapse:collapse}td,th{text-align:left;padding:.15rem 1.2rem .15rem 0;vertical-align:top}
pre{background:#1d2330;color:#f3f5f9;padding:.8rem 1rem;border-radius:6px;overflow-x:auto}
pre code{user-select:all;-webkit-user-select:all}
code.key{word-break:break-all;font-size:.85rem}
ul{padding-left:1.2rem}
`;

/** A self-contained HTML page in the landing pages' style (also used by the /open route). */
export function renderPage(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${e(title)}</title>
<style>${STYLE}</style>
</head>
<body>
${body}
</body>
</html>
`;
}

/** The run page path of an image on this server: /i/NAME/run, or /i/NAME/VERSION/run for a pinned version. */
export function runPagePath(name: string, version?: string): string {
  const image = `/i/${encodeURIComponent(name)}`;
  return version === undefined ? `${image}/run` : `${image}/${encodeURIComponent(version)}/run`;
}

/** The image page's one script: the "Open web+hostme: links with this site" button (src/web/handler.ts). */
// connect-src: the "Host this site" offer probes a HostMe node on this computer (any loopback port) and
// the LAN node address the user typed (any private address: CSP cannot name address ranges, so http:/https:;
// the script itself refuses public addresses, src/web/host-button.ts).
// The same http:/https: lets "Run here" warm the snapshot and the run page's files on intent (src/web/warm.ts).
export const IMAGE_PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src http: https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Group a hex key id in fours so it can be compared by eye. */
function fingerprint(keyId: string): string {
  return keyId.replace(/(.{4})(?=.)/g, '$1 ');
}

/** `pinned`: the page of one version (/i/NAME/VERSION), so its run page is that version's too. */
/** `warm`: paths the run page will read first (server/warm-list.ts), fetched when the pointer reaches "Run here". */
export function renderImagePage(s: ImageSummary, listing: RepoListing, pinned = false, offerIso = false, warm: string[] = []): string {
  const inBrowser = s.hardware.arch === 'i686' && s.bootMode === 'direct';
  const runHere = runPagePath(s.name, pinned ? s.version : undefined);
  const versions = [...(listing.images[s.name]?.versions ?? [])].reverse();
  const rows: Array<[string, string]> = [
    ['Version', `${e(s.version)}${s.latest ? ' <span class="muted">(latest)</span>' : ''}`],
    ['Created', e(s.created)],
    ['Architecture', e(s.hardware.arch)],
    ['Memory', `${s.hardware.memoryMiB} MiB`],
    ['CPUs', String(s.hardware.cpus)],
    ['Boot', s.bootMode === 'direct' ? 'direct kernel boot' : 'firmware'],
    ...s.disks.map((d): [string, string] => [
      `Disk ${e(d.name)}`,
      `${e(formatBytes(d.size))} virtual, ${d.storedBytes !== undefined ? `${e(formatBytes(d.storedBytes))} stored` : 'stored size unknown'}`,
    ]),
    ['Memory snapshot', s.hasSnapshot ? 'yes (resumes instead of booting)' : 'no'],
    ['Publisher key', `<code class="key">${e(fingerprint(s.signer.keyId))}</code>`],
    ['Manifest digest', `<code class="key">${e(s.manifestDigest)}</code>`],
  ];
  const versionItems = versions
    .map((v) => {
      const href = `/i/${encodeURIComponent(s.name)}/${encodeURIComponent(v.version)}`;
      const current = v.version === s.version ? ' <span class="muted">(this page)</span>' : '';
      return `<li><a href="${e(href)}">${e(v.version)}</a> <span class="muted">${e(v.created)}</span>${current}</li>`;
    })
    .join('\n');
  return renderPage(
    `${s.name} ${s.version} - hostme`,
    `<p class="muted"><a href="/">All images</a></p>
<h1>${e(s.name)}</h1>
${s.description ? `<p>${e(s.description)}</p>` : ''}
<h2>How to run</h2>
${inBrowser ? `<p><a href="${e(runHere)}"${warm.length ? ` data-hostme-warm="${e(warm.join(' '))}"` : ''}>Run here, in this tab</a> <span class="muted">(in your browser, with v86)</span></p>
` : ''}<p><a href="${e(`hostme+${s.pageUrl}`)}">Run on my computer</a> <span class="muted">(opens <code>hostme run</code>; <code>hostme install-handler</code> sets up these links), or type:</span></p>
<pre><code>${e(s.runCommand)}</code></pre>
<p id="host-offer" data-page="${e(s.pageUrl)}" hidden><a id="host-link" href="">Host this site on my computer</a> <span class="muted">(your HostMe node runs it in a VM and serves it to the web; you confirm on the node's page)</span></p>
<p id="host-offer-lan" hidden><a id="host-link-lan" href="">Host this site on my network's HostMe node</a> <span class="muted">(the node at the address below; you confirm on its page)</span></p>
<details id="lan-node"><summary>Use a HostMe node on my network</summary><p><input id="lan-node-address" size="32" placeholder="http://192.168.1.5:7481" autocomplete="off"> <button type="button" id="lan-node-save">Save</button> <span id="lan-node-status" class="muted" role="status"></span></p></details>
<p><a href="${e(`/r/${encodeURIComponent(s.name)}.hostme`)}" download>Download ${e(s.name)}.hostme</a> <span class="muted">(a reference file: opens in <code>hostme run</code> once <code>hostme install-handler</code> registered it)</span></p>
<p class="muted">The disk streams on demand; every piece is checked against the signed manifest.</p>
<p><button type="button" id="register-handler" hidden>Open web+hostme: links with this site</button> <span id="handler-status" role="status"></span></p>
${offerIso && s.bootMode === 'direct' ? isoSection(s) : ''}<h2>Details</h2>
<table>
${rows.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join('\n')}
</table>
<h2>Versions</h2>
<ul>
${versionItems}
</ul>
<p class="muted">JSON: <a href="${e(`/api/images/${encodeURIComponent(s.name)}/${encodeURIComponent(s.version)}`)}">image summary</a></p>
<script type="module" src="/_hostme/handler.js"></script>`,
  );
}

/** The ISO (always the pinned version's, so a saved link or torrent keeps meaning this version) and its torrent. */
function isoSection(s: ImageSummary): string {
  const iso = `/i/${encodeURIComponent(s.name)}/${encodeURIComponent(s.version)}/${encodeURIComponent(s.name)}.iso`;
  return `<h2>Download</h2>
<p><a href="${e(iso)}">Bootable ISO</a> <span class="muted">(CD, DVD or USB stick; carries this site's link)</span> · <a href="${e(`${iso}.torrent`)}">torrent</a> <span class="muted">(downloads from this site as a web seed and from other peers)</span></p>
`;
}

export function renderIndexPage(listing: RepoListing): string {
  const names = Object.keys(listing.images).sort();
  const items = names
    .map((name) => {
      const entry = listing.images[name]!;
      const latest = entry.versions.find((v) => v.version === entry.latest);
      const description = latest?.description ? ` - ${e(latest.description)}` : '';
      return `<li><a href="${e(`/i/${encodeURIComponent(name)}`)}">${e(name)}</a> <span class="muted">${e(entry.latest)}</span>${description}</li>`;
    })
    .join('\n');
  return renderPage(
    'hostme images',
    `<h1>hostme images</h1>
${names.length ? `<ul>\n${items}\n</ul>` : '<p class="muted">No images published here yet.</p>'}
<p class="muted">JSON: <a href="/api/images">/api/images</a></p>`,
  );
}

export function renderNotFoundPage(message: string): string {
  return renderPage('Not found - hostme', `<p class="muted"><a href="/">All images</a></p>\n<h1>Not found</h1>\n<p>${e(message)}</p>`);
}

/** GET / */
export async function handleIndexPage(req: IncomingMessage, res: ServerResponse, view: RepoView): Promise<void> {
  sendHtml(req, res, 200, renderIndexPage(await view.listing()));
}

/** GET /i/NAME, /i/NAME/, /i/NAME/VERSION. `segments` follow "i". */
export async function handleImagePage(req: IncomingMessage, res: ServerResponse, segments: string[], view: RepoView, fallbackHost: string, offerIso = false): Promise<void> {
  const parts = segments[segments.length - 1] === '' ? segments.slice(0, -1) : segments;
  try {
    if (parts.length < 1 || parts.length > 2) throw new HttpError(404, 'not-found', 'no such page');
    const { image, listing } = await view.image(parts[0]!, parts[1]);
    const pinned = parts[1] !== undefined;
    const summary = summarize(image, listing, publicBaseUrl(req, fallbackHost), pinned);
    const warm = summary.hardware.arch === 'i686' ? [...RUN_PAGE_ASSETS, ...(await snapshotWarmPaths(view, image.manifest))] : [];
    sendHtml(req, res, 200, renderImagePage(summary, listing, pinned, offerIso, warm), IMAGE_PAGE_CSP);
  } catch (err) {
    if (err instanceof HttpError && err.status === 404) {
      sendHtml(req, res, 404, renderNotFoundPage(err.message));
      return;
    }
    throw err;
  }
}

/** GET /r/NAME.hostme: the reference file (application/vnd.hostme.reference+json). */
export async function handleReferenceFile(req: IncomingMessage, res: ServerResponse, segments: string[], view: RepoView, fallbackHost: string): Promise<void> {
  const m = segments.length === 1 ? /^(.+)\.hostme$/.exec(segments[0]!) : null;
  if (!m) throw new HttpError(404, 'not-found', 'no such reference');
  const { image, listing } = await view.image(m[1]!);
  const summary = summarize(image, listing, publicBaseUrl(req, fallbackHost), false);
  const body = JSON.stringify(makeReference({ pageUrl: summary.pageUrl, name: summary.name, version: summary.version, signer: image.signer, manifestDigest: summary.manifestDigest }), null, 2) + '\n';
  res.writeHead(200, {
    'Content-Type': REFERENCE_MEDIA_TYPE,
    'Content-Disposition': `attachment; filename="${summary.name}.hostme"`,
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-cache',
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}
