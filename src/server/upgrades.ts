/**
 * The one list of a server's upgrade (WebSocket) routes: the hub's tunnel,
 * signaling and gateway (hostme serve --hub) and the network hub's /net/
 * (hostme serve --net) each add a handler; the server asks them in order and
 * closes a request that none claims, so no upgrade is left hanging.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';

/** Claims the request (true: it now owns the socket) or leaves it to the next handler (false). */
export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => boolean;

export interface UpgradeRoutes {
  /** Adds a handler after the others; returns its removal. */
  add(handler: UpgradeHandler): () => void;
}

const routes = new WeakMap<Server, UpgradeRoutes>();

/** The server's upgrade routes (one list per server; its 'upgrade' listener is installed with the first handler). */
export function upgradeRoutes(server: Server): UpgradeRoutes {
  let found = routes.get(server);
  if (found) return found;
  const handlers: UpgradeHandler[] = [];
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    for (const handler of [...handlers]) if (handler(req, socket, head)) return;
    socket.destroy();
  };
  found = {
    add(handler) {
      if (handlers.length === 0) server.on('upgrade', onUpgrade);
      handlers.push(handler);
      return () => {
        const at = handlers.indexOf(handler);
        if (at >= 0) handlers.splice(at, 1);
        if (handlers.length === 0) server.off('upgrade', onUpgrade);
      };
    },
  };
  routes.set(server, found);
  return found;
}
