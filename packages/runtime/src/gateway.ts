/**
 * The HTTP file gateway as a process runs it: `archipelago gateway` and `archipelago-gateway`
 * both call `launchGateway`. It serves the blockers of a configuration file, or of data
 * directories laid out as the embedded default (`DIR/maps`, `DIR/blocks`), through an embedded
 * runtime with the host's identity.
 */
import { join, resolve } from 'node:path';
import { type Gateway, type GatewayUser, startGateway } from '@archipelago/gateway';
import { ArchipelagoError } from '@archipelago/libxseg';
import { type ArchipelagoConfig, defaultConfig, type LoadedConfig, loadConfig } from './config.js';
import { openEmbeddedRuntime } from './embedded.js';
import { switchToServiceAccount } from './sections.js';
import type { EmbeddedRuntime } from './types.js';

export interface GatewayLaunch {
  /** Configuration file (`-c`); ignored when `data`, `maps` or `blocks` is given. */
  config?: string;
  /** A data directory: its `maps/` and `blocks/` (the embedded default's layout). */
  data?: string;
  /** The maps directory (blockerm), instead of `DATA/maps`. */
  maps?: string;
  /** The blocks directory (blockerb), instead of `DATA/blocks`. */
  blocks?: string;
  host?: string;
  port?: number;
  /** Swift users, `ACCOUNT,USER,KEY[,TOKEN]`. */
  users?: string[];
  /** Pre-shared tokens, `TOKEN,ACCOUNT`. */
  tokens?: string[];
  /** Every account open without authentication (testing only). */
  noAuth?: boolean;
  /** Accounts allowed to use the volume bridges. */
  bridgeAccounts?: string[];
  /** Base URL clients reach the gateway at (for X-Storage-Url). */
  publicUrl?: string;
  /** Block size of new files, bytes. */
  blockSize?: number;
  /** Largest object accepted, bytes. */
  maxObjectSize?: number;
}

export interface RunningGateway {
  readonly gateway: Gateway;
  readonly runtime: EmbeddedRuntime;
  /** Stops the gateway (requests in flight finish), then the runtime. */
  close(): Promise<void>;
}

function parseAuth(o: GatewayLaunch): { users: GatewayUser[]; tokens: Record<string, string> } {
  const users = (o.users ?? []).map((u) => {
    const [account, user, key, token] = u.split(',');
    if (!account || !user || !key)
      throw new ArchipelagoError('EINVAL', `bad --user "${u}": want ACCOUNT,USER,KEY[,TOKEN]`);
    return { account, user, key, ...(token ? { token } : {}) };
  });
  const tokens: Record<string, string> = {};
  for (const t of o.tokens ?? []) {
    const [token, account] = t.split(',');
    if (!token || !account) throw new ArchipelagoError('EINVAL', `bad --token "${t}": want TOKEN,ACCOUNT`);
    tokens[token] = account;
  }
  if (!o.noAuth && users.length === 0 && Object.keys(tokens).length === 0)
    throw new ArchipelagoError('EINVAL', 'give at least one --user or --token, or --no-auth');
  return { users, tokens };
}

/**
 * The configuration the gateway serves: the file, or the data directories given, laid out as the
 * embedded default there (`DIR/archipelago.conf`'s): so its run directory, where the host locks
 * are, is the one `vlmc` uses on that data.
 */
function gatewayConfig(o: GatewayLaunch): LoadedConfig | ArchipelagoConfig {
  if (o.data === undefined && o.maps === undefined && o.blocks === undefined) return loadConfig(o.config);
  if ((o.maps === undefined || o.blocks === undefined) && o.data === undefined)
    throw new ArchipelagoError('EINVAL', '--data DIR, or both --maps DIR and --blocks DIR');
  const config = defaultConfig(resolve(o.data ?? '.'));
  if (o.maps !== undefined) config.blockerm.archip_dir = resolve(o.maps);
  if (o.blocks !== undefined) config.blockerb.archip_dir = resolve(o.blocks);
  if (o.data === undefined) return config;
  return { path: join(resolve(o.data), 'archipelago.conf'), source: 'default', created: false, config };
}

/** Opens the runtime and starts the gateway on it. */
export async function launchGateway(o: GatewayLaunch): Promise<RunningGateway> {
  const auth = o.noAuth ? false : parseAuth(o);
  const config = gatewayConfig(o);
  const runtime = await openEmbeddedRuntime(config);
  let gateway: Gateway;
  try {
    gateway = await startGateway({
      blockerm: runtime.blockerm,
      blockerb: runtime.blockerb,
      mapper: runtime.mapper,
      auth,
      ...(o.host !== undefined ? { host: o.host } : {}),
      ...(o.port !== undefined ? { port: o.port } : {}),
      ...(o.blockSize !== undefined ? { blocksize: o.blockSize } : {}),
      ...(o.maxObjectSize !== undefined ? { maxObjectSize: o.maxObjectSize } : {}),
      ...(o.publicUrl !== undefined ? { publicUrl: o.publicUrl } : {}),
      ...(o.bridgeAccounts !== undefined ? { bridgeAccounts: o.bridgeAccounts } : {}),
    });
  } catch (e) {
    await runtime.close();
    throw e;
  }
  // Listening (a port below 1024 needs root): on as [ARCHIPELAGO] USER/GROUP (docs/PRIVILEGES.md).
  try {
    switchToServiceAccount(config);
  } catch (e) {
    await gateway.close();
    await runtime.close();
    throw e;
  }
  return {
    gateway,
    runtime,
    async close() {
      await gateway.close();
      await runtime.close();
    },
  };
}
