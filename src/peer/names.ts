// Names shared by the tracker, the signaling server and their clients, in a
// module with no Node imports: the run page bundles RtcSwarm, which needs them.

/** NAME@VERSION of a swarm (manifest name and version rules). */
export const IMAGE_KEY = /^[a-z0-9][a-z0-9._-]{0,63}@[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/;

/** The hub's WebRTC signaling WebSocket (docs/peers.md "Signaling"). */
export const SIGNAL_PATH = '/api/peers/signal';
