/**
 * The grant list in words, shared by `hostme run`'s ask list and the
 * browser run page (so both say the same thing). Pure: no Node imports, the
 * web bundle uses it.
 */

/** The ask for an overlay network, as `hostme run` lists it. */
export function networkAskText(network: string): string {
  return `join overlay network "${network}" (reach the other environments on it)`;
}

export interface GrantLine { kind: string; text: string; status: 'granted' | 'denied' }

/**
 * What a browser run page grants: the console and the screen; the overlay
 * network the image asks for (or the URL names) when the page joins it;
 * never host folders, internet egress or published ports (a browser VM has
 * no caretaker for them).
 */
export function browserGrantList(options: { asked?: string; joined?: string }): GrantLine[] {
  const lines: GrantLine[] = [];
  if (options.asked) lines.push({ kind: 'network', text: networkAskText(options.asked), status: options.joined === options.asked ? 'granted' : 'denied' });
  if (options.joined && options.joined !== options.asked) lines.push({ kind: 'network', text: networkAskText(options.joined), status: 'granted' });
  lines.push(
    { kind: 'egress', text: 'internet egress (no egress proxy in the browser)', status: 'denied' },
    { kind: 'dir', text: 'host folders', status: 'denied' },
    { kind: 'port', text: 'published ports', status: 'denied' },
    { kind: 'console', text: 'console', status: 'granted' },
    { kind: 'screen', text: 'screen', status: 'granted' },
  );
  return lines;
}
