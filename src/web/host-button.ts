// "Host this site on my computer": shown on a landing page when a HostMe
// node answers on this computer, or on a LAN node whose address the user set
// (docs/host.md "The HostMe button", "LAN nodes").

/** Where the button looks for a node: the address the user set, else the default port on loopback. */
export const NODE_KEY = 'hostme.node';
export const DEFAULT_NODE = 'http://127.0.0.1:7480';
/** A node elsewhere on the user's network (hostme host --lan), set on the landing page. */
export const LAN_NODE_KEY = 'hostme.lan-node';

/** Only loopback nodes here: a remote "node" is offered only as the LAN node the user typed. */
function nodeBase(): string {
  const set = localStorage.getItem(NODE_KEY);
  if (set && /^http:\/\/(127\.0\.0\.1|localhost|\[::1\]):\d{1,5}$/.test(set)) return set;
  return DEFAULT_NODE;
}

/**
 * A LAN node address: http(s)://HOST:PORT where HOST is a private, loopback
 * or link-local address or a .local/.lan name. Public addresses are refused:
 * the button must not send a visitor to a stranger's machine.
 */
export function lanNodeOrigin(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text.trim());
  } catch {
    return undefined;
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username || url.password || url.pathname !== '/' || url.search || url.hash) return undefined;
  const host = url.hostname.toLowerCase();
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host)?.slice(1).map(Number);
  const privateV4 = v4 !== undefined && v4.every((n) => n <= 255) && (v4[0] === 10 || v4[0] === 127 || (v4[0] === 172 && v4[1]! >= 16 && v4[1]! <= 31) || (v4[0] === 192 && v4[1] === 168) || (v4[0] === 169 && v4[1] === 254));
  const privateV6 = /^\[(::1|f[cd][0-9a-f]{0,2}:[0-9a-f:]*|fe80:[0-9a-f:]*)\]$/.test(host);
  const localName = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.(local|lan|home\.arpa)$/.test(host);
  return privateV4 || privateV6 || localName ? url.origin : undefined;
}

/** The node's id if a HostMe node answers /api/hello at `node` (bounded: 2 s). */
async function probe(node: string): Promise<string | undefined> {
  try {
    const response = await fetch(`${node}/api/hello`, { signal: AbortSignal.timeout(2000) });
    const hello = (await response.json()) as { hostme?: string; node?: string };
    return hello.hostme === 'node' ? (hello.node ?? '') : undefined;
  } catch {
    return undefined;
  }
}

async function offerOn(node: string, container: HTMLElement, link: HTMLAnchorElement, pageUrl: string): Promise<boolean> {
  const id = await probe(node);
  if (id === undefined) return false;
  link.href = `${node}/add?u=${encodeURIComponent(pageUrl)}`;
  container.hidden = false;
  container.dataset.node = id;
  return true;
}

export async function offerHosting(container: HTMLElement | null, link: HTMLAnchorElement | null, pageUrl: string): Promise<void> {
  if (!container || !link) return;
  // No node on this computer: the button stays hidden.
  await offerOn(nodeBase(), container, link, pageUrl);
}

/**
 * The LAN node: an address field (stored in this site's localStorage) and,
 * when the node there answers, a second "Host this site" link to it.
 */
export function offerLanHosting(
  parts: { container: HTMLElement | null; link: HTMLAnchorElement | null; input: HTMLInputElement | null; save: HTMLButtonElement | null; status: HTMLElement | null },
  pageUrl: string,
): void {
  const { container, link, input, save, status } = parts;
  if (!container || !link || !input || !save || !status) return;
  const check = async (address: string | null) => {
    container.hidden = true;
    if (!address) return;
    const origin = lanNodeOrigin(address);
    if (!origin) {
      status.textContent = 'not a LAN address (http://192.168.x.y:7481, 10.x, 172.16–31.x, NAME.local)';
      return;
    }
    status.textContent = 'checking…';
    const found = await offerOn(origin, container, link, pageUrl);
    status.textContent = found ? `a HostMe node answers at ${origin}` : `no HostMe node answers at ${origin} (is it started with --lan and --lan-origin ${location.origin}?)`;
  };
  const stored = localStorage.getItem(LAN_NODE_KEY);
  if (stored) input.value = stored;
  save.addEventListener('click', () => {
    const origin = lanNodeOrigin(input.value);
    if (origin) localStorage.setItem(LAN_NODE_KEY, origin);
    else if (!input.value.trim()) localStorage.removeItem(LAN_NODE_KEY);
    void check(input.value.trim() || null);
  });
  void check(stored);
}
