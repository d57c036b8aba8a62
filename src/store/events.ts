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

export function eventChannel<T = unknown>(name: string): EventChannel<T> {
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
