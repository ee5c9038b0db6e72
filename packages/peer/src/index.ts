/** Archipelago peers as daemons: the peer runtime, the blocker peer and the remote blocker client. */
export { type BlockerService, createFileBlockerService } from './blocker-peer.js';
export {
  checkPeerOptions,
  type FileBlockerPeerOptions,
  PEER_OPTIONS_ENV,
  type PeerOptions,
  type SegmentOptions,
  segmentSpec,
} from './options.js';
export { type PidfileState, pidAlive, readPidfile, removePidfile, writePidfile } from './pidfile.js';
export { createLogger, LOG_LEVELS, type RunningPeer, runPeerMain, startPeer } from './runtime.js';
export { SegmentBlocker, type SegmentBlockerOptions } from './segment-blocker.js';
export { BlockerOps, decodeError, ERROR_MAGIC, encodeError, PeerFlag, PeerOp } from './wire.js';

import { fileURLToPath } from 'node:url';
/** The peer process's entry script (built): `node PEER_MAIN` with ARCHIPELAGO_PEER set. */
export const PEER_MAIN: string = fileURLToPath(new URL('./main.js', import.meta.url));
