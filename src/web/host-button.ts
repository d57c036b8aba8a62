// "Host this site on my computer": shown on a landing page when a HostMe
// node answers on this computer (docs/host.md "The HostMe button").

/** Where the button looks for a node: the address the user set, else the default port on loopback. */
export const NODE_KEY = 'hostme.node';
export const DEFAULT_NODE = 'http://127.0.0.1:7480';

/** Only loopback nodes: the page's CSP allows nothing else, and a remote "node" must not be offered. */
function nodeBase(): string {
  const set = localStorage.getItem(NODE_KEY);
  if (set && /^http:\/\/(127\.0\.0\.1|localhost|\[::1\]):\d{1,5}$/.test(set)) return set;
  return DEFAULT_NODE;
}

export async function offerHosting(container: HTMLElement | null, link: HTMLAnchorElement | null, pageUrl: string): Promise<void> {
  if (!container || !link) return;
  const node = nodeBase();
  try {
    const response = await fetch(`${node}/api/hello`, { signal: AbortSignal.timeout(2000) });
    const hello = (await response.json()) as { hostme?: string; node?: string };
    if (hello.hostme !== 'node') return;
    link.href = `${node}/add?u=${encodeURIComponent(pageUrl)}`;
    container.hidden = false;
    container.dataset.node = hello.node ?? '';
  } catch {
    // No node on this computer: the button stays hidden.
  }
}
