/**
 * One console line per source problem, for long-running commands that have no
 * end-of-run summary (hostme nbd): a mirror that served wrong bytes (demoted),
 * a mirror a read moved away from (failover), a corrupt cached object that was
 * deleted and fetched again (repaired), a cache that stopped persisting. Each
 * kind is reported once per source, so a failing mirror cannot flood the console.
 */
import { onEvent, type HostmeEventName, type HostmeEvents } from '../store/events.js';

type Report = { key: string; line: string };

const CHANNELS: { [N in HostmeEventName]?: (m: HostmeEvents[N]) => Report } = {
  'hostme:mirror:demote': (m) => ({ key: `demote ${m.mirror}`, line: `source ${m.mirror}: served wrong bytes (object ${m.id.slice(0, 16)}…): demoted, used last` }),
  'hostme:mirror:failover': (m) => ({ key: `failover ${m.from}`, line: `source ${m.from}: ${m.reason}; reads move on to ${m.to}` }),
  'hostme:peer:dropped': (m) => ({ key: `peer ${m.peer}`, line: `${m.peer}: ${m.reason}: dropped${m.wrongBytes ? ' and reported to the hub' : ''}` }),
  'hostme:cache:repaired': (m) => ({ key: `repaired ${m.id}`, line: `cache: object ${m.id.slice(0, 16)}… was corrupt (${m.reason}): deleted and fetched again` }),
  'hostme:cache:degraded': (m) => ({ key: 'degraded', line: `cache: no longer stores objects (${m.reason}); reads continue uncached` }),
};

/** Starts reporting; returns the function that stops it. */
export function reportSourceProblems(write: (line: string) => void): () => void {
  const seen = new Set<string>();
  const report = ({ key, line }: Report) => {
    if (seen.has(key) || seen.size > 10_000) return;
    seen.add(key);
    write(line);
  };
  const listen = <N extends HostmeEventName>(name: N) => {
    const describe = CHANNELS[name] as (m: HostmeEvents[N]) => Report;
    return onEvent(name, (m) => report(describe(m)));
  };
  const stops = (Object.keys(CHANNELS) as HostmeEventName[]).map(listen);
  return () => stops.forEach((stop) => stop());
}
