/**
 * What an image asks for, and the user's answer. Deny by default: an image's
 * manifest names what it would like (the overlay network it joins, a screen);
 * `hostme run` grants only what the user's flags and grant file say, shows
 * what the image asks beyond that, and asks on a terminal. Without a
 * terminal it refuses unless `--yes` accepts every ask.
 */
import { createInterface } from 'node:readline/promises';
import { HostmeError } from '../errors.js';
import type { GrantSet } from './grant-set.js';
import { networkAskText } from './page-grants.js';

/** One thing the image asks for that is not granted. */
export interface Ask {
  kind: 'network' | 'screen';
  value: string;
  /** Shown to the user. */
  text: string;
}

/** The image's asks that `granted` does not cover. */
export function asksBeyond(manifest: { network?: { join: string }; hardware?: { screen?: boolean } }, granted: GrantSet): Ask[] {
  const asks: Ask[] = [];
  const join = manifest.network?.join;
  if (join && !granted.net.networks.includes(join)) asks.push({ kind: 'network', value: join, text: networkAskText(join) });
  if (manifest.hardware?.screen === true && !granted.screen) asks.push({ kind: 'screen', value: 'vga', text: 'a screen (its VGA adapter, seen through hostme screen)' });
  return asks;
}

/** Adds accepted asks to the grant set (a copy). */
export function acceptAsks(granted: GrantSet, asks: readonly Ask[]): GrantSet {
  const set = structuredClone(granted);
  for (const ask of asks) {
    if (ask.kind === 'network' && !set.net.networks.includes(ask.value)) set.net.networks.push(ask.value);
    if (ask.kind === 'screen') set.screen = true;
  }
  return set;
}

export interface ConfirmOptions {
  /** --yes: accept every ask without a question. */
  yes: boolean;
  /** A terminal to ask on (stdin and stderr are TTYs). */
  terminal: boolean;
  /** The question's answer (tests); default: read a line from stdin. */
  ask?: (question: string) => Promise<string>;
  write?: (text: string) => void;
}

/**
 * Decides the asks: all accepted with --yes; on a terminal the user answers
 * y/N once for all of them (no: the run starts without them, as stand-ins);
 * without a terminal and without --yes: refused with 'grants-refused'.
 */
export async function confirmAsks(image: string, asks: readonly Ask[], options: ConfirmOptions): Promise<Ask[]> {
  if (asks.length === 0) return [];
  const write = options.write ?? ((text: string) => process.stderr.write(text));
  const list = asks.map((a) => `  - ${a.text}`).join('\n');
  if (options.yes) {
    write(`hostme: ${image} asks for, and --yes grants:\n${list}\n`);
    return [...asks];
  }
  if (!options.terminal && !options.ask) {
    // One line: error messages are printed as one line.
    throw new HostmeError('grants-refused', `${image} asks for more than is granted: ${asks.map((a) => a.text).join('; ')}; no terminal to ask on: grant it with ${asks.map(flagFor).join(' ')}, or accept every ask with --yes`, { asks: asks.map((a) => `${a.kind}:${a.value}`) });
  }
  write(`hostme: ${image} asks for more than is granted:\n${list}\n`);
  const answer = await (options.ask ?? readAnswer)('grant these? [y/N] ');
  return /^\s*y(es)?\s*$/i.test(answer) ? [...asks] : [];
}

function flagFor(ask: Ask): string {
  return ask.kind === 'screen' ? '--allow-screen' : `--allow-net=network:${ask.value}`;
}

async function readAnswer(question: string): Promise<string> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return await rl.question(question);
  } finally {
    rl.close();
  }
}
