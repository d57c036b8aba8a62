/**
 * QEMU's `-netdev stream` framing (also passt's): each Ethernet frame is a
 * 4-byte big-endian length followed by the frame. QEMU 7.2's stream netdev
 * cannot reconnect, so QEMU listens (`server=on`) and the switch dials: a
 * restarted switch dials again and the guest is back (QEMU accepts anew).
 */
import net from 'node:net';
import { MAX_FRAME } from './frame.js';
import type { NetSwitch, SwitchPort } from './switch.js';

/** Lengths above this cannot be a frame of any MTU: the stream is out of step, close it. */
const MAX_STREAM_FRAME = 65_535;

/** Splits a byte stream into frames; bounded memory whatever the peer sends. */
export class StreamDeframer {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(
    private readonly onFrame: (frame: Buffer) => void,
    private readonly onOversize: () => void,
  ) {}

  /** Returns false when the stream is broken (a length no frame can have). */
  push(chunk: Buffer): boolean {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    let buf = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    let offset = 0;
    while (buf.length - offset >= 4) {
      const length = buf.readUInt32BE(offset);
      if (length > MAX_STREAM_FRAME) return false;
      if (buf.length - offset < 4 + length) break;
      const frame = buf.subarray(offset + 4, offset + 4 + length);
      if (length > MAX_FRAME) this.onOversize();
      else this.onFrame(frame);
      offset += 4 + length;
    }
    buf = buf.subarray(offset);
    this.pending = buf.length ? [buf] : [];
    this.pendingBytes = buf.length;
    return true;
  }
}

export function frameForStream(frame: Buffer): Buffer {
  const out = Buffer.allocUnsafe(4 + frame.length);
  out.writeUInt32BE(frame.length, 0);
  frame.copy(out, 4);
  return out;
}

export interface QemuPortOptions {
  network: string;
  instance?: string;
  site?: string;
  /** The unix socket QEMU listens on. */
  socket: string;
  /** Caretakers at the gateway (TCP port → unix socket) and isolation; see AttachOptions.gateway. */
  services?: GatewayService[];
  isolated?: boolean;
}

export interface GatewayService { port: number; socket: string }

/** A socket's send buffer past this means the guest stopped reading: drop rather than queue. */
const MAX_QUEUED_BYTES = 4 << 20;

/**
 * Dials a QEMU guest's stream socket and attaches it as a switch port.
 * Resolves with the port once connected; the port detaches when QEMU closes.
 */
export function dialQemuPort(sw: NetSwitch, options: QemuPortOptions, onClose?: (port: SwitchPort) => void): Promise<{ port: SwitchPort; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(options.socket);
    socket.setNoDelay?.(true);
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      let port: SwitchPort;
      try {
        port = sw.attach(options.network, {
          kind: 'qemu',
          instance: options.instance,
          site: options.site,
          gateway: {
            isolated: options.isolated === true,
            services: (p) => options.services?.find((service) => service.port === p)?.socket,
          },
          send: (frame) => {
            if (socket.writableLength > MAX_QUEUED_BYTES) return;
            socket.write(frameForStream(frame));
          },
        });
      } catch (err) {
        socket.destroy();
        reject(err);
        return;
      }
      const deframer = new StreamDeframer(
        (frame) => port.receive(frame),
        () => {
          port.counters.rxFrames++;
          port.counters.drops.oversize++;
        },
      );
      socket.on('data', (chunk: Buffer) => {
        if (!deframer.push(chunk)) {
          port.counters.drops.malformed++;
          socket.destroy();
        }
      });
      socket.on('error', () => {});
      socket.once('close', () => {
        port.detach();
        onClose?.(port);
      });
      resolve({ port, socket });
    });
  });
}
