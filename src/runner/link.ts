import { HostmeError } from '../errors.js';

export interface ImageLink {
  /** Repository location: an http(s) base URL or a local directory. */
  repo: string;
  name: string;
  version?: string;
}

/**
 * Accepted forms (docs/run.md):
 *   http://host:8080 hello            repository URL + name
 *   http://host:8080/i/hello          landing page (also /i/hello/run, /i/hello/2, /i/hello/2/run)
 *   hostme+https://host/i/hello       the desktop handler scheme (also hostme+http, web+hostme:)
 *   /srv/repo hello                   a local repository directory
 * A name may carry a version: hello@2.
 */
export function parseImageLink(link: string, nameArg?: string): ImageLink {
  const location = unwrapHandlerScheme(link);
  if (/^https?:\/\//i.test(location)) return parseUrl(location, nameArg);
  if (!nameArg) throw new HostmeError('usage', `"${link}" is a local path: also give the image name (hostme run DIR NAME)`);
  return { repo: location, ...splitVersion(nameArg) };
}

/**
 * The location inside a handler-scheme link: web+hostme:X (X percent-decoded
 * once, an optional "//" dropped) and hostme+http(s)://… become the plain
 * location; anything else is returned trimmed. Throws URIError on malformed
 * percent-encoding.
 */
export function unwrapHandlerScheme(link: string): string {
  let location = link.trim();
  const webScheme = /^web\+hostme:(\/\/)?/i;
  if (webScheme.test(location)) location = decodeURIComponent(location.replace(webScheme, ''));
  return location.replace(/^hostme\+(https?:)/i, '$1');
}

function parseUrl(text: string, nameArg?: string): ImageLink {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new HostmeError('usage', `"${text}" is not a valid URL`);
  }
  // /i/NAME, /i/NAME/run, /i/NAME/VERSION, /i/NAME/VERSION/run (a version named "run" is shadowed, as on the server).
  const landing = /^(.*?)\/i\/([^/]+)(?:\/([^/]+))?(?:\/run)?\/?$/.exec(url.pathname);
  url.search = '';
  url.hash = '';
  if (landing) {
    url.pathname = landing[1] || '/';
    const spec = splitVersion(decodeURIComponent(landing[2]!));
    const pathVersion = landing[3] === undefined || landing[3] === 'run' ? undefined : decodeURIComponent(landing[3]);
    return { repo: url.href.replace(/\/$/, ''), ...spec, ...(pathVersion ? { version: pathVersion } : {}) };
  }
  if (!nameArg) throw new HostmeError('usage', `which image? give a name after the repository URL (hostme run ${text} NAME) or use the page URL ${text.replace(/\/$/, '')}/i/NAME`);
  return { repo: url.href.replace(/\/$/, ''), ...splitVersion(nameArg) };
}

function splitVersion(spec: string): { name: string; version?: string } {
  const [name, version] = spec.split('@', 2) as [string, string | undefined];
  return version ? { name, version } : { name };
}
