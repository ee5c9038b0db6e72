/** Archipelago peers as daemons: the peer runtime, the blocker, mapperd and vlmcd peers, and their clients. */
export {
  type BlockerService,
  createBlockerService,
  createFileBlockerService,
  createRadosBlockerService,
  type PeerService,
} from './blocker-peer.js';
export { PeerClient, type PeerClientOptions } from './client.js';
export { createMapperService } from './mapper-peer.js';
export { decodeSegments, encodeSegments, MapperOp } from './mapper-wire.js';
export {
  type BlockerPeerOptions,
  checkPeerOptions,
  type FileBlockerPeerOptions,
  type MapperdPeerOptions,
  PEER_OPTIONS_ENV,
  type PeerOptions,
  RADOS_CONNECT_TIMEOUT_MS,
  type RadosBlockerPeerOptions,
  type SegmentOptions,
  segmentSpec,
  syslogSocketOf,
  type VlmcdPeerOptions,
} from './options.js';
export { type PidfileState, pidAlive, readPidfile, removePidfile, writePidfile } from './pidfile.js';
export { createLogger, LOG_LEVELS, type RunningPeer, runPeerMain, startPeer } from './runtime.js';
export { SegmentBlocker, type SegmentBlockerOptions } from './segment-blocker.js';
export { type MapperHello, SegmentMapper, type SegmentMapperOptions } from './segment-mapper.js';
export { SegmentVolumes, type SegmentVolumesOptions } from './segment-volumes.js';
export { LOCAL0, priOf, severityOf, syslogStream } from './syslog.js';
export { createVlmcService, VlmcFlag, VlmcOp } from './vlmc-peer.js';
export {
  BlockerOps,
  decodeError,
  ERROR_MAGIC,
  encodeError,
  isPeerGone,
  PeerFlag,
  PeerOp,
  payloadOf,
} from './wire.js';

import { fileURLToPath } from 'node:url';
/** The peer process's entry script (built): `node PEER_MAIN` with ARCHIPELAGO_PEER set. */
export const PEER_MAIN: string = fileURLToPath(new URL('./main.js', import.meta.url));
