/**
 * The HTTP file gateway (Pithos / OpenStack Swift v1 compatible subset). See README.md.
 * This module starts the server and routes each request to the module of its resource:
 *
 *   GET  /auth/v1.0                      auth.ts       Swift v1 auth: X-Auth-User, X-Auth-Key → X-Storage-Url, X-Auth-Token
 *   GET|HEAD /<account>                  account.ts    container listing / account stats
 *   PUT|HEAD|GET|DELETE /<a>/<c>         container.ts  create / stats / object listing / delete (empty) container
 *   POST /<a>/<c> (application/octet-stream)  blocks.ts  store blocks → 202 + their hashes (Pithos)
 *   PUT  /<a>/<c>/<o>                    object.ts     streamed upload
 *   PUT  /<a>/<c>/<o>?hashmap            hashmap.ts    {bytes, hashes} → 201 or 409 + missing
 *   GET|HEAD /<a>/<c>/<o>                object.ts     download with Range (single, multiple)
 *   GET  /<a>/<c>/<o>?hashmap&format=json  hashmap.ts
 *   DELETE /<a>/<c>/<o>                  object.ts
 *   POST /<a>/<c>/<o> + X-Archipelago-Clone-To: <volume>   bridges.ts  clone the file into a volume
 *   PUT  /<a>/<c>/<o> + X-Archipelago-Source-Map: <map>    bridges.ts  register a snapshot as a file
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Mapper } from '@archipelago/mapper';
import { showAccount } from './account.js';
import { AUTH_PATHS, Auth } from './auth.js';
import { postBlocks } from './blocks.js';
import { cloneToVolume, publishMap } from './bridges.js';
import { containerNotAllowed, createContainer, deleteContainer, showContainer } from './container.js';
import type {
  ContainerTarget,
  Gateway,
  GatewayContext,
  GatewayOptions,
  Handler,
  ObjectTarget,
  Target,
} from './context.js';
import { getHashmap, putHashmap } from './hashmap.js';
import { HttpError, header, sendError } from './http.js';
import { checkAccount, checkContainer, checkObject } from './names.js';
import { deleteObject, getObject, postObject, putObject } from './object.js';
import { FileStore } from './store.js';

export type { Gateway, GatewayAuth, GatewayOptions, GatewayUser } from './context.js';

/** Starts a gateway; resolves once it listens. */
export async function startGateway(opts: GatewayOptions): Promise<Gateway> {
  const mapper = opts.mapper ?? new Mapper({ blockerm: opts.blockerm, blockerb: opts.blockerb });
  const store = new FileStore({
    blockerm: opts.blockerm,
    blockerb: opts.blockerb,
    mapper,
    ...(opts.blocksize !== undefined ? { blocksize: opts.blocksize } : {}),
    ...(opts.inflight !== undefined ? { inflight: opts.inflight } : {}),
  });
  const router = new Router(store, opts);
  const server = http.createServer(
    {
      maxHeaderSize: opts.maxHeaderSize ?? 16 * 1024,
      ...serverTimeouts(opts),
      keepAliveTimeout: 5_000,
    },
    (req, res) => {
      router.handle(req, res).catch((e: unknown) => {
        opts.logger?.error({ err: String(e) }, 'gateway: unhandled');
        res.destroy();
      });
    },
  );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = opts.publicUrl ?? `http://${host}:${addr.port}`;
  router.baseUrl = url.replace(/\/+$/, '');
  let closing: Promise<void> | null = null;
  return {
    url: router.baseUrl,
    port: addr.port,
    server,
    store,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }).then(async () => {
        if (!opts.mapper) await mapper.close();
      });
      return closing;
    },
  };
}

/**
 * Node's own limits on a request's arrival: the head within `headersTimeout`, the whole request
 * within `requestTimeout` (0: none; big uploads take long, a stalled body is cut by `bodyTimeout`
 * instead). Node checks them every `connectionsCheckingInterval` (default 30 s), which would add
 * up to that much to each: here a quarter of the shortest, between 250 ms and 30 s.
 */
function serverTimeouts(opts: GatewayOptions): http.ServerOptions {
  const request = checkMs('requestTimeout', opts.requestTimeout ?? 0);
  let headers = checkMs('headersTimeout', opts.headersTimeout ?? 60_000);
  if (request > 0 && (headers === 0 || headers > request)) headers = request; // Node requires <=
  const shortest = Math.min(...[headers, request].filter((t) => t > 0), 120_000);
  return {
    headersTimeout: headers,
    requestTimeout: request,
    connectionsCheckingInterval: Math.max(250, Math.min(30_000, Math.floor(shortest / 4))),
  };
}

function checkMs(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${name}: milliseconds, an integer >= 0`);
  return v;
}

/** Routes a request by its path (auth, account, container, object) and method to its resource. */
class Router {
  /** What clients reach the gateway at, for X-Storage-Url (set once it listens). */
  baseUrl = '';
  private readonly ctx: GatewayContext;
  private readonly auth: Auth;
  private readonly maxUrl: number;

  constructor(store: FileStore, opts: GatewayOptions) {
    this.ctx = {
      store,
      opts,
      maxObject: opts.maxObjectSize ?? 5 * 1024 ** 3,
      bodyTimeout: checkMs('bodyTimeout', opts.bodyTimeout ?? 30_000),
    };
    this.maxUrl = opts.maxUrlLength ?? 8192;
    this.auth = new Auth(opts.auth);
  }

  async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = performance.now();
    const logger = this.ctx.opts.logger;
    try {
      await this.route(req, res);
    } catch (e) {
      sendError(req, res, e, logger);
    } finally {
      logger?.debug(
        {
          method: req.method,
          url: req.url?.slice(0, 200),
          status: res.statusCode,
          ms: performance.now() - started,
        },
        'gateway request',
      );
    }
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const raw = req.url ?? '/';
    if (raw.length > this.maxUrl) throw new HttpError(414, 'request target too long');
    const q = raw.indexOf('?');
    const rawPath = q < 0 ? raw : raw.slice(0, q);
    const query = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
    if (!rawPath.startsWith('/')) throw new HttpError(400, 'bad request target');
    if (AUTH_PATHS.has(rawPath)) return this.auth.login(req, res, this.baseUrl);
    const t = parseTarget(rawPath, query);
    this.auth.authorize(req, t.account);
    const m = req.method ?? 'GET';
    if (t.object !== undefined) {
      const o = t as ObjectTarget;
      return objectHandler(req, o, m)(this.ctx, req, res, o);
    }
    if (t.container !== undefined) {
      const c = t as ContainerTarget;
      return containerHandler(m)(this.ctx, req, res, c);
    }
    if (m !== 'GET' && m !== 'HEAD') throw new HttpError(405, `${m} is not allowed on an account`);
    return showAccount(this.ctx, req, res, t);
  }
}

/** The handler of a request on a container, by method. */
function containerHandler(m: string): Handler<ContainerTarget> {
  switch (m) {
    case 'PUT':
      return createContainer;
    case 'DELETE':
      return deleteContainer;
    case 'POST':
      return postBlocks;
    case 'GET':
    case 'HEAD':
      return showContainer;
    default:
      return containerNotAllowed;
  }
}

/** The handler of a request on an object, by method, then `?hashmap` or a bridge header. */
function objectHandler(req: http.IncomingMessage, t: ObjectTarget, m: string): Handler<ObjectTarget> {
  switch (m) {
    case 'PUT':
      if (t.query.has('hashmap')) return putHashmap;
      if (header(req, 'x-archipelago-source-map') !== undefined) return publishMap;
      return putObject;
    case 'DELETE':
      return deleteObject;
    case 'POST':
      return header(req, 'x-archipelago-clone-to') !== undefined ? cloneToVolume : postObject;
    case 'GET':
    case 'HEAD':
      return t.query.has('hashmap') ? getHashmap : getObject;
    default:
      throw new HttpError(405, `${m} is not allowed on an object`);
  }
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new HttpError(400, 'bad percent-encoding in the path');
  }
}

/** `/<account>[/<container>[/<object...>]]`, percent-decoded, never normalized. */
function parseTarget(rawPath: string, query: URLSearchParams): Target {
  const p = rawPath.slice(1);
  const i = p.indexOf('/');
  const account = checkAccount(decode(i < 0 ? p : p.slice(0, i)));
  if (i < 0 || i === p.length - 1) return { account, query };
  const rest = p.slice(i + 1);
  const j = rest.indexOf('/');
  const container = checkContainer(decode(j < 0 ? rest : rest.slice(0, j)));
  if (j < 0 || j === rest.length - 1) return { account, container, query };
  return { account, container, object: checkObject(decode(rest.slice(j + 1))), query };
}
