/** Archipelago peers as daemons: the peer runtime, the blocker, mapperd and vlmcd peers, and their clients. */

export {
  envPeerDownTimeoutMs,
  PEER_DOWN_TIMEOUT_ENV,
  PEER_WATCH_MS,
  PeerClient,
  type PeerClientOptions,
  type PeerState,
} from './clients/client.js';
export { SegmentBlocker, type SegmentBlockerOptions } from './clients/segment-blocker.js';
export { type MapperHello, SegmentMapper, type SegmentMapperOptions } from './clients/segment-mapper.js';
export { SegmentVolumes, type SegmentVolumesOptions } from './clients/segment-volumes.js';
export {
  type BlockerPeerOptions,
  checkPeerOptions,
  type FileBlockerPeerOptions,
  MAX_THREADS,
  type MapperdPeerOptions,
  PEER_OPTIONS_ENV,
  type PeerOptions,
  peerEnvironment,
  RADOS_CONNECT_TIMEOUT_MS,
  type RadosBlockerPeerOptions,
  type SegmentOptions,
  segmentSpec,
  syslogSocketOf,
  type VlmcdPeerOptions,
} from './options.js';
export {
  commitPidfile,
  createPidfile,
  type PidfileState,
  pidAlive,
  readPidfile,
  removePidfile,
  writePidfile,
} from './pidfile.js';
export {
  type Account,
  applyUmask,
  checkServiceDirs,
  isRoot,
  lookupGroup,
  lookupUser,
  makeServiceDir,
  resolveAccount,
  SERVICE_DIR_MODE,
  type SwitchResult,
  switchAccount,
} from './privileges.js';
export { type BreakReply, decodeLockArgs, encodeLockArgs, type LockArgs } from './protocol/lock-wire.js';
export { decodeSegments, encodeSegments, MapperOp } from './protocol/mapper-wire.js';
export { VlmcFlag, VlmcOp } from './protocol/vlmc-wire.js';
export {
  BlockerOps,
  decodeError,
  ERROR_MAGIC,
  encodeError,
  isPeerGone,
  PeerFlag,
  PeerOp,
  payloadOf,
} from './protocol/wire.js';
export { createLogger, LOG_LEVELS, type RunningPeer, runPeerMain, startPeer } from './runtime.js';
export {
  type BlockerService,
  createBlockerService,
  createFileBlockerService,
  createRadosBlockerService,
  type PeerService,
} from './servers/blocker-peer.js';
export { createMapperService } from './servers/mapper-peer.js';
export { createVlmcService } from './servers/vlmc-peer.js';
export { LOCAL0, priOf, severityOf, syslogStream } from './syslog.js';

import { fileURLToPath } from 'node:url';
/** The peer process's entry script (built): `node PEER_MAIN` with ARCHIPELAGO_PEER set. */
export const PEER_MAIN: string = fileURLToPath(new URL('./main.js', import.meta.url));
