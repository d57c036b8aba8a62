import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RepoListing } from '../repo/layout.js';
import { HttpError, escapeHtml as e, formatBytes, publicBaseUrl, sendHtml } from './http-util.js';
import { summarize, type ImageSummary, type RepoView } from './repo-view.js';

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

function page(title: string, body: string): string {
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

/** Group a hex key id in fours so it can be compared by eye. */
function fingerprint(keyId: string): string {
  return keyId.replace(/(.{4})(?=.)/g, '$1 ');
}

export function renderImagePage(s: ImageSummary, listing: RepoListing): string {
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
  return page(
    `${s.name} ${s.version} - hostme`,
    `<p class="muted"><a href="/">All images</a></p>
<h1>${e(s.name)}</h1>
${s.description ? `<p>${e(s.description)}</p>` : ''}
<h2>How to run</h2>
<pre><code>${e(s.runCommand)}</code></pre>
<p class="muted">The disk streams on demand; every piece is checked against the signed manifest.</p>
<h2>Details</h2>
<table>
${rows.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join('\n')}
</table>
<h2>Versions</h2>
<ul>
${versionItems}
</ul>
<p class="muted">JSON: <a href="${e(`/api/images/${encodeURIComponent(s.name)}/${encodeURIComponent(s.version)}`)}">image summary</a></p>`,
  );
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
  return page(
    'hostme images',
    `<h1>hostme images</h1>
${names.length ? `<ul>\n${items}\n</ul>` : '<p class="muted">No images published here yet.</p>'}
<p class="muted">JSON: <a href="/api/images">/api/images</a></p>`,
  );
}

export function renderNotFoundPage(message: string): string {
  return page('Not found - hostme', `<p class="muted"><a href="/">All images</a></p>\n<h1>Not found</h1>\n<p>${e(message)}</p>`);
}

/** GET / */
export async function handleIndexPage(req: IncomingMessage, res: ServerResponse, view: RepoView): Promise<void> {
  sendHtml(req, res, 200, renderIndexPage(await view.listing()));
}

/** GET /i/NAME, /i/NAME/, /i/NAME/VERSION. `segments` follow "i". */
export async function handleImagePage(req: IncomingMessage, res: ServerResponse, segments: string[], view: RepoView, fallbackHost: string): Promise<void> {
  const parts = segments[segments.length - 1] === '' ? segments.slice(0, -1) : segments;
  try {
    if (parts.length < 1 || parts.length > 2) throw new HttpError(404, 'not-found', 'no such page');
    const { image, listing } = await view.image(parts[0]!, parts[1]);
    const summary = summarize(image, listing, publicBaseUrl(req, fallbackHost), parts[1] !== undefined);
    sendHtml(req, res, 200, renderImagePage(summary, listing));
  } catch (err) {
    if (err instanceof HttpError && err.status === 404) {
      sendHtml(req, res, 404, renderNotFoundPage(err.message));
      return;
    }
    throw err;
  }
}
