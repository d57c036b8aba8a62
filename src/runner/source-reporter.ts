/**
 * One console line per source problem, for long-running commands that have no
 * end-of-run summary (hostme nbd): a mirror that served wrong bytes (demoted),
 * a mirror a read moved away from (failover), a corrupt cached object that was
 * deleted and fetched again (repaired), a cache that stopped persisting. Each
 * kind is reported once per source, so a failing mirror cannot flood the console.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';

const CHANNELS: Record<string, (m: Record<string, unknown>) => { key: string; line: string }> = {
  'hostme:mirror:demote': (m) => ({ key: `demote ${String(m.mirror)}`, line: `source ${String(m.mirror)}: served wrong bytes (object ${String(m.id).slice(0, 16)}…): demoted, used last` }),
  'hostme:mirror:failover': (m) => ({ key: `failover ${String(m.from)}`, line: `source ${String(m.from)}: ${String(m.reason)}; reads move on to ${String(m.to)}` }),
  'hostme:peer:dropped': (m) => ({ key: `peer ${String(m.peer)}`, line: `${String(m.peer)}: ${String(m.reason)}: dropped${m.wrongBytes ? ' and reported to the hub' : ''}` }),
  'hostme:cache:repaired': (m) => ({ key: `repaired ${String(m.id)}`, line: `cache: object ${String(m.id).slice(0, 16)}… was corrupt (${String(m.reason)}): deleted and fetched again` }),
  'hostme:cache:degraded': (m) => ({ key: 'degraded', line: `cache: no longer stores objects (${String(m.reason)}); reads continue uncached` }),
};

/** Starts reporting; returns the function that stops it. */
export function reportSourceProblems(write: (line: string) => void): () => void {
  const seen = new Set<string>();
  const handlers = Object.entries(CHANNELS).map(([name, describe]) => {
    const handler = (message: unknown) => {
      const { key, line } = describe((message ?? {}) as Record<string, unknown>);
      if (seen.has(key) || seen.size > 10_000) return;
      seen.add(key);
      write(line);
    };
    subscribe(name, handler);
    return [name, handler] as const;
  });
  return () => handlers.forEach(([name, handler]) => unsubscribe(name, handler));
}
