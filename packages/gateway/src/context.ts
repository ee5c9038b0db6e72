/** The gateway's options, and what every resource handler is given: the store and the target. */
import type * as http from 'node:http';
import type { Blocker } from '@archipelago/blocker';
import type { Logger, Mapper } from '@archipelago/mapper';
import type { FileStore } from './store.js';

export interface GatewayUser {
  /** Swift user, as sent in X-Auth-User (e.g. "test:tester"). */
  user: string;
  /** Secret sent in X-Auth-Key. */
  key: string;
  /** The account the user's token grants. */
  account: string;
  /** The token handed out at auth (default: random per gateway start). */
  token?: string;
}

export interface GatewayAuth {
  users?: GatewayUser[];
  /** Pre-shared tokens → account (Pithos style: clients send X-Auth-Token only). */
  tokens?: Record<string, string>;
  /**
   * Seconds a token handed out at auth stays valid (`X-Auth-Token-Expires`; default 86400). Past
   * them it gets 401 and the client authenticates again. Pre-shared `tokens` do not expire.
   */
  tokenLifetime?: number;
}

export interface GatewayOptions {
  blockerm: Blocker;
  blockerb: Blocker;
  /** A mapper over the same blockers (default: a new one). */
  mapper?: Mapper;
  host?: string;
  /** 0 (default) picks a free port. */
  port?: number;
  /** Block size of new files (default 4 MiB, as Pithos). */
  blocksize?: number;
  /** Blocks stored or read ahead at once per request (default 4). */
  inflight?: number;
  /** Users and tokens; `false` turns authentication off (every account is open). */
  auth: GatewayAuth | false;
  /** Largest object accepted by PUT or block POST (default 5 GiB, as Swift). */
  maxObjectSize?: number;
  /** Largest request head, in bytes (default 16 KiB); larger gets 431. */
  maxHeaderSize?: number;
  /** Largest request target, in bytes (default 8 KiB); longer gets 414. */
  maxUrlLength?: number;
  /** Base URL clients reach the gateway at (default http://host:port), for X-Storage-Url. */
  publicUrl?: string;
  /**
   * Accounts allowed to use the volume bridges (X-Archipelago-Source-Map, X-Archipelago-Clone-To):
   * they reach every map of the store, so they are for administrators. Default: none, or every
   * account when `auth` is false.
   */
  bridgeAccounts?: string[];
  /**
   * Milliseconds a client has to send a request's head (default 60 000); past them the gateway
   * answers 408 and closes the connection (slowloris). 0: no limit.
   */
  headersTimeout?: number;
  /**
   * Milliseconds a request body may stall, no byte arriving (default 30 000); past them the request
   * is answered 408, the connection closed, and nothing of the body is made visible. 0: no limit.
   */
  bodyTimeout?: number;
  /**
   * Milliseconds a whole request (head and body) may take to arrive (default 0: no limit, as big
   * uploads take long); past them 408 and the connection closed, nothing made visible.
   */
  requestTimeout?: number;
  logger?: Logger;
}

export interface Gateway {
  readonly url: string;
  readonly port: number;
  readonly server: http.Server;
  readonly store: FileStore;
  /** Stops accepting connections, ends idle ones, waits for requests in flight. */
  close(): Promise<void>;
}

/** What every resource handler is given. */
export interface GatewayContext {
  readonly store: FileStore;
  readonly opts: GatewayOptions;
  /** Largest object accepted by PUT or block POST (`opts.maxObjectSize`, default 5 GiB). */
  readonly maxObject: number;
  /** How long a request body may stall, ms (`opts.bodyTimeout`, default 30 000; 0: no limit). */
  readonly bodyTimeout: number;
}

/** A request path, `/<account>[/<container>[/<object...>]]`, decoded and checked, and its query. */
export interface Target {
  account: string;
  container?: string;
  object?: string;
  query: URLSearchParams;
}

export type ContainerTarget = Target & { container: string };
export type ObjectTarget = Required<Target>;

/** Answers one kind of request on a resource; the router picks it by path, method, query, headers. */
export type Handler<T extends Target> = (
  ctx: GatewayContext,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  t: T,
) => Promise<void>;
