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
  /** Compute the MD5 of streamed uploads for ETag (default true; Swift clients check it). */
  md5?: boolean;
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
