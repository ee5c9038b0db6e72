/**
 * @archipelago/runtime: the configuration and everything built from it, once for every tool.
 * Config loading and validation, the INI → options translation (one function per section), the
 * host identity, both wirings (embedded, daemons), the run-state of mapped volumes, starting
 * background processes (the `vlmc map` endpoint, the peers), the volume operations of `vlmc`, the
 * peers' start/stop/status of `archipelago`, and the gateway launcher.
 */
export * from './config.js';
export { CONFIG_ENV, SYSTEM_CONFIG_PATH } from './config.js';
export {
  abortDaemonCalls,
  daemonPeers,
  dataPathOf,
  openVolumeRuntime,
  PEER_DOWN_TIMEOUT_ENV,
  peerDownTimeoutMs,
  VOLUME_DAEMONS,
} from './daemons-client.js';
export {
  chooseDataPath,
  DATA_PATH_ENV,
  type DataPath,
  DirectDataBlocker,
  requestedDataPath,
} from './direct-data.js';
export { openBlocker, openEmbeddedRuntime } from './embedded.js';
export { type ControlRequest, callControl } from './endpoint/control.js';
export {
  ENDPOINT_ENV,
  ENDPOINT_MODE_ENV,
  EndpointProcess,
  type HostControlRequest,
  type HostRequest,
  type HostStatus,
  hostKey,
  ownRadosClientsOf,
  runHost,
  sharedEndpoint,
  shareEndpointOf,
} from './endpoint/host.js';
export { endpointMain, listMapped, type MapOptions, mapVolume, unmapVolume } from './endpoint/map.js';
export { type MappedEntry, type MappedStatus, RunState } from './endpoint/runstate.js';
export { guardStop, STOP_GRACE_ENV, type StopGuard, stopGraceMs } from './endpoint/stop-guard.js';
export {
  GATEWAY_ENV,
  type GatewayLaunch,
  gatewayCredentials,
  launchGateway,
  type RunningGateway,
  readAuthFile,
} from './gateway.js';
export * from './paths.js';
export * from './peers.js';
export {
  blockerOptions,
  DEFAULT_UNIQUE_STR,
  hostIdentity,
  lockTimeoutMs,
  makeDataDirs,
  peerLaunch,
  peerOptions,
  serviceAccount,
  switchToServiceAccount,
  umaskOf,
} from './sections.js';
export { Session, type SessionOptions } from './session.js';
export {
  logTail,
  type Readiness,
  reportReady,
  reportStartFailure,
  type SpawnOptions,
  spawnDetached,
} from './spawn.js';
export * from './transfer.js';
export type { Compose, EmbeddedRuntime, Runtime, RuntimeOptions, Wiring } from './types.js';
export * from './volumes.js';
export { COMPOSE_ENV, chooseWiring, composeOf, openRuntime, WIRING_ENV } from './wiring.js';
