import type { RtcEnvironment } from './rtc.js';

/** Node's WebRTC and WebSocket for RtcSwarm: node-datachannel's W3C polyfill and `ws` (loaded on first use). */
export async function nodeRtcEnvironment(): Promise<RtcEnvironment> {
  const [{ RTCPeerConnection }, { WebSocket }] = await Promise.all([import('node-datachannel/polyfill'), import('ws')]);
  return { RTCPeerConnection: RTCPeerConnection as unknown as RtcEnvironment['RTCPeerConnection'], WebSocket: WebSocket as unknown as RtcEnvironment['WebSocket'] };
}

/** Stops node-datachannel's native threads (end of process, tests). */
export async function closeNodeRtc(): Promise<void> {
  const nodeDataChannel = await import('node-datachannel');
  nodeDataChannel.cleanup();
}
