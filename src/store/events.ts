/**
 * Named event channels of the store and device layers ("hostme:cache:hit", …).
 * In Node they are node:diagnostics_channel channels (subscribers there see
 * every message; no subscriber costs nothing), found at run time so that this
 * file stays web-standard; a page gets a small in-memory equivalent.
 */
export interface EventChannel<T = unknown> {
  readonly name: string;
  readonly hasSubscribers: boolean;
  publish(message: T): void;
  subscribe(handler: (message: unknown, name: string | symbol) => void): void;
  unsubscribe(handler: (message: unknown, name: string | symbol) => void): boolean;
}

type Handler = (message: unknown, name: string | symbol) => void;

/** What each channel publishes (one map: publishers and subscribers are checked against it). */
export interface HostmeEvents {
  /** An object served from the local cache. */
  'hostme:cache:hit': { id: string; bytes: number; source: string };
  /** An object fetched from upstream (and cached). */
  'hostme:cache:miss': { id: string; bytes: number; source: string; priority: 'demand' | 'prefetch' | 'background' };
  /** A cached object failed verification: it was deleted and is fetched again. */
  'hostme:cache:repaired': { id: string; reason: string };
  /** Once, when the cache stops persisting (full, read-only). */
  'hostme:cache:degraded': { reason: string };
  /** A mirror served wrong bytes and was demoted. */
  'hostme:mirror:demote': { mirror: string; id: string; reason: string };
  /** A read moved on to the next mirror. */
  'hostme:mirror:failover': { from: string; to: string; id: string; reason: string };
  /** An untrusted peer was dropped from the group (wrong bytes, or dead). */
  'hostme:peer:dropped': { peer: string; id: string; reason: string; wrongBytes: boolean };
  /** A completed HTTP request (status 0 and `error` when it failed). */
  'hostme:http:request': { url: string; method: string; status: number; bytes: number; ms: number; attempt: number; error?: string };
}

export type HostmeEventName = keyof HostmeEvents;

interface DiagnosticsChannelModule {
  channel(name: string): EventChannel;
}

function nodeDiagnostics(): DiagnosticsChannelModule | undefined {
  const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  return proc?.getBuiltinModule?.('node:diagnostics_channel') as DiagnosticsChannelModule | undefined;
}

class PageChannel implements EventChannel {
  private readonly handlers = new Set<Handler>();
  constructor(readonly name: string) {}
  get hasSubscribers(): boolean {
    return this.handlers.size > 0;
  }
  publish(message: unknown): void {
    for (const handler of this.handlers) handler(message, this.name);
  }
  subscribe(handler: Handler): void {
    this.handlers.add(handler);
  }
  unsubscribe(handler: Handler): boolean {
    return this.handlers.delete(handler);
  }
}

const pageChannels = new Map<string, PageChannel>();

export function eventChannel<N extends HostmeEventName>(name: N): EventChannel<HostmeEvents[N]> {
  return anyChannel<HostmeEvents[N]>(name);
}

/** Subscribes to one event; returns the unsubscribe function. */
export function onEvent<N extends HostmeEventName>(name: N, handler: (message: HostmeEvents[N]) => void): () => void {
  const channel = eventChannel(name);
  const wrapped: Handler = (message) => handler(message as HostmeEvents[N]);
  channel.subscribe(wrapped);
  return () => void channel.unsubscribe(wrapped);
}

function anyChannel<T>(name: string): EventChannel<T> {
  const node = nodeDiagnostics();
  if (node) return node.channel(name) as EventChannel<T>;
  let page = pageChannels.get(name);
  if (!page) pageChannels.set(name, (page = new PageChannel(name)));
  return page as EventChannel<T>;
}

/** A timer that does not keep a Node process alive (browsers have no such notion). */
export function unrefTimer<T>(timer: T): T {
  (timer as { unref?: () => void }).unref?.();
  return timer;
}
