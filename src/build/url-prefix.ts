/** URL prefix match on parsed URLs: same origin, and the path continues the prefix's path at a "/" boundary. */
export function matchesPrefix(href: string, prefixes: readonly string[]): boolean {
  let url: URL;
  try {
    url = new URL(href);
  } catch {
    return false;
  }
  return prefixes.some((prefix) => {
    let p: URL;
    try {
      p = new URL(prefix);
    } catch {
      return false;
    }
    if (p.origin !== url.origin || url.username || url.password) return false;
    const base = p.pathname.endsWith('/') ? p.pathname : `${p.pathname}/`;
    return url.pathname === p.pathname || url.pathname.startsWith(base);
  });
}
