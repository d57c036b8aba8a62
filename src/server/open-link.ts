import type { IncomingMessage, ServerResponse } from 'node:http';
import { imageNamePattern, versionPattern } from '../format/manifest.js';
import { errorMessage } from '../errors.js';
import { parseImageLink, unwrapHandlerScheme } from '../runner/link.js';
import { HttpError, escapeHtml as e, sendHtml } from './http-util.js';
import { renderPage, runPagePath } from './landing-page.js';
import type { RepoView } from './repo-view.js';

/**
 * GET /open?u=LINK: the target of the browser protocol handler the run page
 * registers (`navigator.registerProtocolHandler('web+hostme', ORIGIN + '/open?u=%s')`).
 * The browser substitutes %s with the whole clicked link, percent-encoded.
 * A link to an image of this server redirects (303) to its run page; anything
 * else gets a page that says why. Never an open redirect: the Location is
 * always a path on this server.
 */

export const OPEN_PATH = '/open';
/** Longer links are refused before parsing (a real one is well under 300 characters). */
export const MAX_LINK_LENGTH = 2048;

export type OpenTarget =
  /** An image of this server: `runPath` is its run page (a path, same origin). */
  | { kind: 'here'; name: string; version?: string; runPath: string }
  /** A well-formed link to an image on another site (or under another path). */
  | { kind: 'elsewhere'; name: string; version?: string; repo: string; runUrl: string; runCommand: string }
  | { kind: 'invalid'; reason: string };

const LINK_FORMS = /^(?:web\+hostme:|hostme\+https?:\/\/|https?:\/\/)/i;

/**
 * Resolves a clicked link (the `u` parameter) against this server's public
 * origin. Accepts the link grammar of `hostme run` (src/runner/link.ts) except
 * local paths: web+hostme:URL (percent-encoded or not), hostme+http(s)://…,
 * and plain landing or run page URLs.
 */
export function resolveOpenLink(link: string | null, serverOrigin: string): OpenTarget {
  if (link === null || link.trim() === '') return { kind: 'invalid', reason: 'No link was given (expected /open?u=web+hostme:…).' };
  if (link.length > MAX_LINK_LENGTH) return { kind: 'invalid', reason: `The link is longer than ${MAX_LINK_LENGTH} characters.` };
  if (!LINK_FORMS.test(link.trim())) return { kind: 'invalid', reason: 'This is not a hostme link: it should start with web+hostme:, hostme+https:// or https://.' };
  let parsed: ReturnType<typeof parseImageLink>;
  try {
    if (!/^https?:\/\//i.test(unwrapHandlerScheme(link))) return { kind: 'invalid', reason: 'The link must point to an http:// or https:// site.' };
    parsed = parseImageLink(link);
  } catch (err) {
    return { kind: 'invalid', reason: `This hostme link cannot be read: ${errorMessage(err)}` };
  }
  const { name, version } = parsed;
  if (!imageNamePattern.test(name)) return { kind: 'invalid', reason: `"${name}" is not a valid image name.` };
  if (version !== undefined && !versionPattern.test(version)) return { kind: 'invalid', reason: `"${version}" is not a valid image version.` };
  let repo: URL;
  try {
    repo = new URL(parsed.repo);
  } catch {
    return { kind: 'invalid', reason: `The link names no valid site (${parsed.repo}).` };
  }
  const pin = version === undefined ? {} : { version };
  if (repo.origin === new URL(serverOrigin).origin && repo.pathname === '/') {
    return { kind: 'here', name, ...pin, runPath: runPagePath(name, version) };
  }
  const repoBase = parsed.repo.replace(/\/$/, '');
  const spec = version === undefined ? name : `${name}@${version}`;
  return {
    kind: 'elsewhere',
    name,
    ...pin,
    repo: repoBase,
    runUrl: repoBase + runPagePath(name, version),
    runCommand: `hostme run ${repoBase}/i/${encodeURIComponent(spec)}`,
  };
}

/**
 * The `u` query parameter, percent-decoded once. Not URLSearchParams: it turns
 * "+" into a space, and a hand-written /open?u=web+hostme:… must keep its "+".
 */
export function linkParameter(requestUrl: string): string | null {
  const at = requestUrl.indexOf('?');
  if (at === -1) return null;
  for (const part of requestUrl.slice(at + 1).replace(/#.*$/, '').split('&')) {
    const eq = part.indexOf('=');
    if ((eq === -1 ? part : part.slice(0, eq)) !== 'u') continue;
    const value = eq === -1 ? '' : part.slice(eq + 1);
    try {
      return decodeURIComponent(value);
    } catch {
      return value; // malformed escapes: parsing reports the link as unreadable
    }
  }
  return null;
}

function explain(req: IncomingMessage, res: ServerResponse, status: number, title: string, body: string): void {
  sendHtml(req, res, status, renderPage(`${title} - hostme`, `<p class="muted"><a href="/">All images</a></p>\n<h1>${e(title)}</h1>\n${body}`));
}

/** Answers GET /open?u=…: a 303 to this server's run page, or an explanation. */
export async function handleOpenLink(req: IncomingMessage, res: ServerResponse, view: RepoView, serverOrigin: string): Promise<void> {
  const target = resolveOpenLink(linkParameter(req.url ?? ''), serverOrigin);
  if (target.kind === 'invalid') {
    explain(req, res, 400, 'Not a hostme link', `<p>${e(target.reason)}</p>\n<p class="muted">A hostme link looks like <code>web+hostme:${e(serverOrigin)}/i/NAME</code>.</p>`);
    return;
  }
  if (target.kind === 'elsewhere') {
    explain(
      req,
      res,
      404,
      'This image is on another site',
      `<p>The link points to <code>${e(target.name)}</code> on <code>${e(target.repo)}</code>, not on this server (${e(serverOrigin)}), so it is not opened here.</p>
<p>Run it in the browser on that site: <a href="${e(target.runUrl)}" rel="noopener noreferrer">${e(target.runUrl)}</a></p>
<p>Or on your computer:</p>
<pre><code>${e(target.runCommand)}</code></pre>`,
    );
    return;
  }
  try {
    await view.image(target.name, target.version);
  } catch (err) {
    if (err instanceof HttpError && err.status === 404) {
      explain(req, res, 404, 'Not found', `<p>${e(err.message)} on this server.</p>`);
      return;
    }
    throw err;
  }
  res.statusCode = 303;
  res.setHeader('Location', target.runPath);
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Length', 0);
  res.end();
}
