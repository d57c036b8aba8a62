/**
 * The hub (`hostme serve --net`): the machine's switch for a state directory
 * (its control socket serves `hostme net … --dir`, and `hostme run` with
 * HOSTME_NET_DIR set to it joins directly), plus a WebSocket endpoint on the
 * repository server for browser guests:
 *
 *   GET /net/NETWORK?token=TOKEN&instance=NAME   (Upgrade: websocket)
 *
 * One raw Ethernet frame per binary message, both ways, no header: what
 * v86's `net_device.relay_url` speaks. The token (from `hostme net token
 * NETWORK`) is checked before the upgrade; a bad one gets a 401 with a
 * message that says what to do. Browsers cannot set headers on a WebSocket,
 * so the token travels in the query (use https/wss beyond loopback).
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { HostmeError } from '../errors.js';
import { MAX_FRAME } from './frame.js';
import { formatSubnet, networkNamePattern } from './registry.js';
import { startSwitchDaemon, type SwitchDaemon } from './switchd.js';
import type { SwitchLimits } from './switch.js';
import { upgradeRoutes } from '../server/upgrades.js';

export const NET_PATH_PREFIX = '/net/';
const instancePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** A browser that stops reading loses frames beyond this instead of growing the hub's memory. */
const MAX_BUFFERED = 1 << 20;

export interface NetHubOptions {
  dir: string;
  limits?: SwitchLimits;
  /** Most WebSocket ports at once (default 1024). */
  maxPorts?: number;
  log?: (line: string) => void;
}

export interface NetHub {
  daemon: SwitchDaemon;
  close(): Promise<void>;
}

export async function attachNetHub(server: Server, options: NetHubOptions): Promise<NetHub> {
  const daemon = await startSwitchDaemon(options.dir, options.limits, options.log);
  if (!daemon) throw new HostmeError('net-switch-busy', `another switch process already serves ${options.dir}; stop it (hostme net stop) or give serve another --net-dir`, { dir: options.dir });
  const maxPorts = options.maxPorts ?? 1024;
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME, perMessageDeflate: false });
  const sockets = new Set<WebSocket>();

  const refuse = (socket: Duplex, status: number, message: string) => {
    const body = JSON.stringify({ error: { code: status === 401 ? 'net-token' : 'usage', message } }) + '\n';
    socket.end(`HTTP/1.1 ${status} ${status === 401 ? 'Unauthorized' : status === 503 ? 'Service Unavailable' : 'Bad Request'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  };

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): boolean => {
    const url = new URL(req.url ?? '/', 'http://hub');
    if (!url.pathname.startsWith(NET_PATH_PREFIX)) return false; // another route's (server/upgrades.ts closes it if none claims it)
    handleNetUpgrade(url, req, socket, head);
    return true;
  };
  const handleNetUpgrade = (url: URL, req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const [network = '', kind, ...rest] = url.pathname.slice(NET_PATH_PREFIX.length).split('/');
    const trunk = kind === 'trunk' && rest.length === 0;
    const token = url.searchParams.get('token') ?? '';
    const instance = url.searchParams.get('instance') ?? '';
    if (!networkNamePattern.test(network) || (kind !== undefined && !trunk)) return refuse(socket, 400, 'the path must be /net/NETWORK (a guest) or /net/NETWORK/trunk (a switch), with a network name of lowercase letters, digits and "-"');
    if (trunk) {
      if (!daemon.sw.registry.checkToken(network, token)) return refuse(socket, 401, `no valid join token for network ${network}: ask the hub's operator for one (hostme net token ${network}) and give it to hostme run --net-token`);
      if (sockets.size >= maxPorts) return refuse(socket, 503, 'the hub has no free ports; try again later');
      wss.handleUpgrade(req, socket, head, (ws) => acceptTrunk(ws, network));
      return;
    }
    if (!instancePattern.test(instance)) return refuse(socket, 400, 'instance= must name this guest: letters, digits, ".", "_" or "-", at most 64');
    if (!daemon.sw.registry.checkToken(network, token)) return refuse(socket, 401, `no valid join token for network ${network}: ask the hub's operator for one (hostme net token ${network}) and pass it as ?token=`);
    if (sockets.size >= maxPorts) return refuse(socket, 503, 'the hub has no free ports; try again later');
    wss.handleUpgrade(req, socket, head, (ws) => {
      let port;
      try {
        port = daemon.sw.attach(network, {
          kind: 'websocket',
          instance,
          send: (frame) => {
            if (ws.bufferedAmount < MAX_BUFFERED) ws.send(frame);
          },
        });
      } catch (err) {
        ws.close(1008, (err as Error).message.slice(0, 120));
        return;
      }
      sockets.add(ws);
      options.log?.(`websocket port ${port.id}: ${instance} on ${network}`);
      let alive = true;
      ws.on('pong', () => (alive = true));
      const heartbeat = setInterval(() => {
        if (!alive) return ws.terminate();
        alive = false;
        ws.ping();
      }, 30_000);
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (isBinary) port.receive(data);
        else port.counters.drops.malformed++;
      });
      ws.on('error', () => {});
      ws.once('close', () => {
        clearInterval(heartbeat);
        sockets.delete(ws);
        port.detach();
      });
    });
  };
  const acceptTrunk = (ws: WebSocket, name: string) => {
    const network = daemon.sw.network(name);
    const port = daemon.sw.attach(name, {
      kind: 'trunk',
      send: (frame) => {
        if (ws.bufferedAmount < MAX_BUFFERED * 4) ws.send(frame);
      },
    });
    sockets.add(ws);
    options.log?.(`trunk port ${port.id} on ${name}`);
    const sendLeases = (type: string) => ws.send(JSON.stringify({ type, subnet: formatSubnet(network.subnet), leases: network.leases() }));
    const onLeases = () => sendLeases('leases');
    network.leaseListeners.add(onLeases);
    sendLeases('hello');
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) return port.receive(data);
      // A lease request from the switch behind the trunk (the hub owns the network's leases).
      let request: { type?: unknown; instance?: unknown; mac?: unknown; site?: unknown };
      try {
        request = JSON.parse(data.toString('utf8')) as typeof request;
      } catch {
        port.counters.drops.malformed++;
        return;
      }
      const validMac = typeof request.mac === 'number' && Number.isInteger(request.mac) && request.mac >= 0 && request.mac < 2 ** 48;
      const validSite = request.site === undefined || (typeof request.site === 'string' && networkNamePattern.test(request.site));
      if (request.type !== 'lease' || typeof request.instance !== 'string' || !instancePattern.test(request.instance) || !validMac || !validSite) {
        port.counters.drops.malformed++;
        return;
      }
      try {
        network.leaseHere(request.instance, request.mac as number, request.site as string | undefined);
      } catch (err) {
        options.log?.(`trunk ${name}: ${(err as Error).message}`);
      }
    });
    ws.on('error', () => {});
    ws.once('close', () => {
      network.leaseListeners.delete(onLeases);
      sockets.delete(ws);
      port.detach();
    });
  };
  const removeRoute = upgradeRoutes(server).add(onUpgrade);

  return {
    daemon,
    close: async () => {
      removeRoute();
      for (const ws of sockets) ws.terminate();
      wss.close();
      await daemon.close();
    },
  };
}
