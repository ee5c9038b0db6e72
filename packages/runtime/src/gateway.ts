/**
 * The HTTP file gateway as a process runs it: `archipelago gateway` and `archipelago-gateway`
 * both call `launchGateway`. It serves the blockers of a configuration file, or of data
 * directories laid out as the embedded default (`DIR/maps`, `DIR/blocks`), through an embedded
 * runtime with the host's identity.
 */
import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type Gateway, type GatewayAuth, type GatewayUser, startGateway } from '@archipelago/gateway';
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
  /**
   * Swift users, `ACCOUNT,USER,KEY[,TOKEN]`. On a command line these are readable by every local
   * user (`/proc/PID/cmdline`): prefer `authFile` or the environment.
   */
  users?: string[];
  /** Pre-shared tokens, `TOKEN,ACCOUNT` (the same caveat as `users`). */
  tokens?: string[];
  /**
   * A file of users and tokens (`readAuthFile`), neither readable nor writable by others; default
   * `$ARCHIPELAGO_GATEWAY_AUTH_FILE`.
   */
  authFile?: string;
  /**
   * Where `ARCHIPELAGO_GATEWAY_AUTH_FILE`, `ARCHIPELAGO_GATEWAY_USERS` (`ACCOUNT,USER,KEY[,TOKEN]`
   * entries, blank-separated) and `ARCHIPELAGO_GATEWAY_TOKENS` (`TOKEN,ACCOUNT` entries) are read
   * (default `process.env`; they are deleted from it once read, so no child inherits them).
   */
  env?: NodeJS.ProcessEnv;
  /** Seconds a token handed out at auth stays valid (X-Auth-Token-Expires; default 86400). */
  tokenLifetime?: number;
  /** Seconds a client has to send a request head (default 60); then 408, connection closed. */
  headersTimeout?: number;
  /** Seconds a request body may stall (default 30); then 408, connection closed, nothing stored. */
  bodyTimeout?: number;
  /** Seconds a whole request may take to arrive (default 0: no limit). */
  requestTimeout?: number;
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

/** The environment variables `launchGateway` reads users and tokens from. */
export const GATEWAY_ENV = {
  authFile: 'ARCHIPELAGO_GATEWAY_AUTH_FILE',
  users: 'ARCHIPELAGO_GATEWAY_USERS',
  tokens: 'ARCHIPELAGO_GATEWAY_TOKENS',
} as const;

export interface GatewayCredentials {
  users: GatewayUser[];
  /** Pre-shared token → account. */
  tokens: Record<string, string>;
}

/** `ACCOUNT,USER,KEY[,TOKEN]`; `where` names its source in errors (never the key). */
function parseUser(fields: string[], where: string): GatewayUser {
  const [account, user, key, token] = fields;
  if (!account || !user || !key || fields.length > 4)
    throw new ArchipelagoError('EINVAL', `bad user ${where}: want ACCOUNT USER KEY [TOKEN]`);
  return { account, user, key, ...(token ? { token } : {}) };
}

function parseToken(fields: string[], where: string): [string, string] {
  const [token, account] = fields;
  if (!token || !account || fields.length > 2)
    throw new ArchipelagoError('EINVAL', `bad token ${where}: want TOKEN ACCOUNT`);
  return [token, account];
}

/**
 * Reads a gateway auth file: one entry a line, blanks between fields, `#` comments:
 *
 *     user  ACCOUNT USER KEY [TOKEN]     # a Swift user (X-Auth-User USER, X-Auth-Key KEY)
 *     token TOKEN ACCOUNT                # a pre-shared token (never expires)
 *
 * Refused (EINVAL) unless it is a regular file owned by root or by this process's user, with no
 * permission for others and not writable by its group (as ssh treats a private key): `chmod 600`,
 * or `640` with group `archipelago` for a gateway that runs as that group.
 */
export function readAuthFile(path: string): GatewayCredentials {
  let text: string;
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO must be refused below, not block the open.
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    throw new ArchipelagoError('EINVAL', `auth file ${path}: ${(e as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new ArchipelagoError('EINVAL', `auth file ${path}: not a regular file`);
    const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
    if (st.mode & 0o027)
      throw new ArchipelagoError(
        'EINVAL',
        `auth file ${path} is ${st.mode & 0o007 ? 'accessible by others' : 'writable by its group'} ` +
          `(mode ${mode}): it holds keys; chmod 600 ${path} (or 640, group archipelago)`,
      );
    const euid = process.geteuid?.() ?? st.uid;
    if (st.uid !== 0 && st.uid !== euid)
      throw new ArchipelagoError(
        'EINVAL',
        `auth file ${path} is owned by uid ${st.uid}: want root or uid ${euid}`,
      );
    text = readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
  const out: GatewayCredentials = { users: [], tokens: {} };
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) return;
    const [kind, ...fields] = line.split(/\s+/);
    const where = `at ${path}:${i + 1}`;
    if (kind === 'user') out.users.push(parseUser(fields, where));
    else if (kind === 'token') {
      const [t, a] = parseToken(fields, where);
      out.tokens[t] = a;
    } else
      throw new ArchipelagoError('EINVAL', `${path}:${i + 1}: want "user ..." or "token ...", not "${kind}"`);
  });
  return out;
}

/**
 * Every user and token the gateway is given: the command line's (`users`, `tokens`), the auth
 * file's, and the environment's (`GATEWAY_ENV`; deleted from `env` once read).
 */
export function gatewayCredentials(o: GatewayLaunch): GatewayCredentials {
  const env = o.env ?? process.env;
  const entries = (v: string | undefined) => (v ?? '').split(/\s+/).filter(Boolean);
  const users = (o.users ?? []).map((u) => parseUser(u.split(','), 'in --user'));
  const tokens: Record<string, string> = {};
  for (const t of o.tokens ?? []) {
    const [token, account] = parseToken(t.split(','), 'in --token');
    tokens[token] = account;
  }
  for (const u of entries(env[GATEWAY_ENV.users]))
    users.push(parseUser(u.split(','), `in ${GATEWAY_ENV.users}`));
  for (const t of entries(env[GATEWAY_ENV.tokens])) {
    const [token, account] = parseToken(t.split(','), `in ${GATEWAY_ENV.tokens}`);
    tokens[token] = account;
  }
  const file = o.authFile ?? env[GATEWAY_ENV.authFile];
  if (file) {
    const f = readAuthFile(file);
    users.push(...f.users);
    Object.assign(tokens, f.tokens);
  }
  for (const k of Object.values(GATEWAY_ENV)) delete env[k];
  return { users, tokens };
}

function parseAuth(o: GatewayLaunch): GatewayAuth {
  const life = o.tokenLifetime;
  if (life !== undefined && (!Number.isSafeInteger(life) || life < 1))
    throw new ArchipelagoError('EINVAL', 'tokenLifetime: whole seconds, at least 1');
  const { users, tokens } = gatewayCredentials(o);
  if (users.length === 0 && Object.keys(tokens).length === 0)
    throw new ArchipelagoError(
      'EINVAL',
      `no users or tokens: give --auth-file FILE (or ${GATEWAY_ENV.users} / ${GATEWAY_ENV.tokens}), or --no-auth`,
    );
  return { users, tokens, ...(life !== undefined ? { tokenLifetime: life } : {}) };
}

/** Seconds (a launch option) → milliseconds (a gateway option), checked. */
function ms(name: string, seconds: number | undefined): number | undefined {
  if (seconds === undefined) return undefined;
  if (!Number.isFinite(seconds) || seconds < 0)
    throw new ArchipelagoError('EINVAL', `${name}: seconds, a number >= 0`);
  return Math.round(seconds * 1000);
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
  const headersTimeout = ms('headersTimeout', o.headersTimeout);
  const bodyTimeout = ms('bodyTimeout', o.bodyTimeout);
  const requestTimeout = ms('requestTimeout', o.requestTimeout);
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
      ...(headersTimeout !== undefined ? { headersTimeout } : {}),
      ...(bodyTimeout !== undefined ? { bodyTimeout } : {}),
      ...(requestTimeout !== undefined ? { requestTimeout } : {}),
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
