/**
 * The HTTP file gateway (Pithos / OpenStack Swift v1 compatible subset). See README.md.
 *
 *   GET  /auth/v1.0                      Swift v1 auth: X-Auth-User, X-Auth-Key → X-Storage-Url, X-Auth-Token
 *   GET|HEAD /<account>                  container listing / account stats
 *   PUT|HEAD|GET|DELETE /<a>/<c>         create / stats / object listing / delete (empty) container
 *   POST /<a>/<c> (application/octet-stream)  store blocks → 202 + their hashes (Pithos)
 *   PUT  /<a>/<c>/<o>                    streamed upload; ?hashmap: {bytes, hashes} → 201 or 409 + missing
 *   GET|HEAD /<a>/<o>/<o>                download with Range (single, multiple); ?hashmap&format=json
 *   DELETE /<a>/<c>/<o>
 *   POST /<a>/<c>/<o> + X-Archipelago-Clone-To: <volume>   bridge: clone the file into a volume
 *   PUT  /<a>/<c>/<o> + X-Archipelago-Source-Map: <map>    bridge: register a snapshot as a file
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Blocker } from '@archipelago/blocker';
import { ArchipelagoError } from '@archipelago/libxseg';
import { objectCount, ZERO_BLOCK } from '@archipelago/mapfile';
import { type Logger, Mapper } from '@archipelago/mapper';
import { checkAccount, checkContainer, checkObject, NameError } from './names.js';
import { type ByteRange, parseRange } from './ranges.js';
import { type FileRecord, FileStore, isContentName, Upload } from './store.js';

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

const MAX_META_BYTES = 4096;
const MAX_META_COUNT = 90;
const LISTING_LIMIT = 10_000;
const ERR_STATUS: Record<string, number> = {
  ENOENT_VOLUME: 404,
  EEXIST_VOLUME: 409,
  ENOTSNAPSHOT: 409,
  ELOCKED: 409,
  EINVAL: 400,
  EINVAL_NAME: 400,
  EINVAL_SIZE: 400,
  ENOSPC: 507,
  ENOTSUP: 501,
};

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly body?: unknown,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

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
  const handler = new Handler(store, opts);
  const server = http.createServer(
    {
      maxHeaderSize: opts.maxHeaderSize ?? 16 * 1024,
      requestTimeout: 0, // big uploads take long; idle peers are cut by headersTimeout / keepAlive
      headersTimeout: 60_000,
      keepAliveTimeout: 5_000,
    },
    (req, res) => {
      handler.handle(req, res).catch((e: unknown) => {
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
  handler.baseUrl = url.replace(/\/+$/, '');
  let closing: Promise<void> | null = null;
  return {
    url: handler.baseUrl,
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

interface Target {
  account: string;
  container?: string;
  object?: string;
  query: URLSearchParams;
}

class Handler {
  baseUrl = '';
  private readonly tokens = new Map<string, string>();
  private readonly users = new Map<string, GatewayUser & { token: string }>();
  private readonly maxObject: number;
  private readonly maxUrl: number;

  constructor(
    private readonly store: FileStore,
    private readonly opts: GatewayOptions,
  ) {
    this.maxObject = opts.maxObjectSize ?? 5 * 1024 ** 3;
    this.maxUrl = opts.maxUrlLength ?? 8192;
    if (opts.auth) {
      for (const [t, a] of Object.entries(opts.auth.tokens ?? {})) this.tokens.set(t, checkAccount(a));
      for (const u of opts.auth.users ?? []) {
        const token = u.token ?? `AUTH_tk${randomBytes(16).toString('hex')}`;
        this.users.set(u.user, { ...u, account: checkAccount(u.account), token });
        this.tokens.set(token, u.account);
      }
    }
  }

  async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = performance.now();
    try {
      await this.route(req, res);
    } catch (e) {
      this.fail(req, res, e);
    } finally {
      this.opts.logger?.debug(
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

  private fail(req: http.IncomingMessage, res: http.ServerResponse, e: unknown): void {
    let status = 500;
    let body: unknown = { error: 'internal error' };
    let headers: Record<string, string> = {};
    if (e instanceof HttpError) {
      status = e.status;
      body = e.body ?? { error: e.message };
      headers = e.headers;
    } else if (e instanceof NameError) {
      status = 400;
      body = { error: e.message };
    } else if (ArchipelagoError.isInstance(e)) {
      status = ERR_STATUS[e.code] ?? 500;
      body = { error: e.message, code: e.code };
    } else {
      this.opts.logger?.error({ err: String(e), url: req.url?.slice(0, 200) }, 'gateway: request failed');
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const text = `${JSON.stringify(body)}\n`;
    // An unread request body (refused upload) is not drained: close the connection after replying.
    const unread = !req.complete;
    res.writeHead(status, {
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': Buffer.byteLength(text),
      ...(unread ? { Connection: 'close' } : {}),
      ...headers,
    });
    res.end(req.method === 'HEAD' ? undefined : text);
    if (unread) {
      res.on('finish', () => req.socket.destroySoon());
    }
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const raw = req.url ?? '/';
    if (raw.length > this.maxUrl) throw new HttpError(414, 'request target too long');
    const q = raw.indexOf('?');
    const rawPath = q < 0 ? raw : raw.slice(0, q);
    const query = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
    if (!rawPath.startsWith('/')) throw new HttpError(400, 'bad request target');
    if (rawPath === '/auth/v1.0' || rawPath === '/auth/v1' || rawPath === '/v1.0') return this.auth(req, res);
    const t = parseTarget(rawPath, query);
    this.authorize(req, t.account);
    const m = req.method ?? 'GET';
    if (t.object !== undefined) return this.object(req, res, t as Required<Target>, m);
    if (t.container !== undefined) return this.container(req, res, t as Target & { container: string }, m);
    return this.account(req, res, t, m);
  }

  // ------------------------------------------------------------------ auth

  private auth(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, 'use GET');
    const user = header(req, 'x-auth-user') ?? header(req, 'x-storage-user');
    const key = header(req, 'x-auth-key') ?? header(req, 'x-storage-pass');
    const u = user === undefined ? undefined : this.users.get(user);
    if (!u || key === undefined || !safeEqual(key, u.key)) throw new HttpError(401, 'bad user or key');
    const storage = `${this.baseUrl}/${encodeURIComponent(u.account)}`;
    res.writeHead(200, {
      'X-Storage-Url': storage,
      'X-Auth-Token': u.token,
      'X-Storage-Token': u.token,
      'X-Auth-Token-Expires': '86400',
      'Content-Length': 0,
    });
    res.end();
  }

  /** The bridges reach every map of the store: only for the accounts configured for them. */
  private checkBridge(account: string): void {
    const allowed = this.opts.bridgeAccounts;
    if (allowed ? allowed.includes(account) : this.opts.auth === false) return;
    throw new HttpError(403, `account ${account} may not use the volume bridges (bridgeAccounts)`);
  }

  private authorize(req: http.IncomingMessage, account: string): void {
    if (this.opts.auth === false) return;
    const token = header(req, 'x-auth-token') ?? header(req, 'x-storage-token');
    if (token === undefined) throw new HttpError(401, 'authentication required (X-Auth-Token)');
    const acct = this.tokens.get(token);
    if (acct === undefined) throw new HttpError(401, 'invalid token');
    if (acct !== account) throw new HttpError(403, `the token does not grant account ${account}`);
  }

  // ------------------------------------------------------------------ account

  private async account(req: http.IncomingMessage, res: http.ServerResponse, t: Target, m: string) {
    if (m !== 'GET' && m !== 'HEAD') throw new HttpError(405, `${m} is not allowed on an account`);
    const containers = await this.store.listContainers(t.account);
    const stats = await Promise.all(
      containers.map(async (c) => {
        const objs = await this.store.listObjects(t.account, c.container);
        return { name: c.container, count: objs.length, bytes: objs.reduce((s, o) => s + o.bytes, 0) };
      }),
    );
    const headers = {
      'X-Account-Container-Count': String(stats.length),
      'X-Account-Object-Count': String(stats.reduce((s, c) => s + c.count, 0)),
      'X-Account-Bytes-Used': String(stats.reduce((s, c) => s + c.bytes, 0)),
      'X-Timestamp': (Date.now() / 1000).toFixed(5),
    };
    if (m === 'HEAD') {
      res.writeHead(204, headers);
      res.end();
      return;
    }
    const rows = page(stats, t.query, (s) => s.name);
    this.listing(
      req,
      res,
      t.query,
      headers,
      rows,
      (r) => r.name,
      (r) => r,
    );
  }

  // ------------------------------------------------------------------ container

  private async container(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    t: Target & { container: string },
    m: string,
  ) {
    const { account, container } = t;
    if (m === 'PUT') {
      const created = await this.store.putContainer(account, container);
      res.writeHead(created ? 201 : 202, { 'Content-Length': 0 });
      res.end();
      return;
    }
    if (m === 'DELETE') {
      const r = await this.store.deleteContainer(account, container);
      if (r === 'notfound') throw new HttpError(404, 'no such container');
      if (r === 'notempty') throw new HttpError(409, 'the container is not empty');
      res.writeHead(204);
      res.end();
      return;
    }
    if (!(await this.store.getContainer(account, container))) throw new HttpError(404, 'no such container');
    if (m === 'POST') return this.postBlocks(req, res, t);
    if (m !== 'GET' && m !== 'HEAD') throw new HttpError(405, `${m} is not allowed on a container`);
    const objs = await this.store.listObjects(account, container);
    const headers = {
      'X-Container-Object-Count': String(objs.length),
      'X-Container-Bytes-Used': String(objs.reduce((s, o) => s + o.bytes, 0)),
      'X-Container-Block-Size': String(this.store.blocksize),
      'X-Container-Block-Hash': 'sha256',
      'X-Timestamp': (Date.now() / 1000).toFixed(5),
    };
    if (m === 'HEAD') {
      res.writeHead(204, headers);
      res.end();
      return;
    }
    const prefix = t.query.get('prefix') ?? '';
    const delimiter = t.query.get('delimiter') ?? '';
    type Row = { name: string; rec?: FileRecord };
    const rows: Row[] = [];
    const seen = new Set<string>();
    for (const o of objs) {
      if (!o.name.startsWith(prefix)) continue;
      if (delimiter) {
        const i = o.name.indexOf(delimiter, prefix.length);
        if (i >= 0) {
          const sub = o.name.slice(0, i + delimiter.length);
          if (!seen.has(sub)) {
            seen.add(sub);
            rows.push({ name: sub });
          }
          continue;
        }
      }
      rows.push({ name: o.name, rec: o });
    }
    this.listing(
      req,
      res,
      t.query,
      headers,
      page(rows, t.query, (r) => r.name),
      (r) => r.name,
      (r) =>
        r.rec
          ? {
              name: r.name,
              bytes: r.rec.bytes,
              hash: r.rec.etag,
              x_object_hash: r.rec.hash,
              content_type: r.rec.contentType,
              last_modified: new Date(r.rec.lastModified).toISOString().replace('Z', ''),
            }
          : { subdir: r.name },
    );
  }

  private listing<T>(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    query: URLSearchParams,
    headers: Record<string, string>,
    rows: T[],
    text: (r: T) => string,
    json: (r: T) => unknown,
  ): void {
    const format =
      query.get('format') ?? (/application\/json/.test(header(req, 'accept') ?? '') ? 'json' : 'plain');
    if (format === 'json') {
      const body = JSON.stringify(rows.map(json));
      res.writeHead(200, {
        ...headers,
        'Content-Type': 'application/json; charset=utf-8',
        'Content-Length': Buffer.byteLength(body),
      });
      res.end(body);
      return;
    }
    if (format !== 'plain' && format !== 'text')
      throw new HttpError(400, `format ${format} is not supported`);
    if (rows.length === 0) {
      res.writeHead(204, headers);
      res.end();
      return;
    }
    const body = rows.map((r) => `${text(r)}\n`).join('');
    res.writeHead(200, {
      ...headers,
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  }

  /** Pithos block upload: the body is cut into blocks, each stored once; 202 with their hashes. */
  private async postBlocks(req: http.IncomingMessage, res: http.ServerResponse, t: Target) {
    const ct = (header(req, 'content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    if (ct !== 'application/octet-stream') {
      // Metadata updates are accepted and ignored (no container metadata is kept).
      await drainBody(req, 64 * 1024);
      res.writeHead(204);
      res.end();
      return;
    }
    const up = await this.receive(req, { md5: false });
    const hashes = up.hashes;
    const body =
      t.query.get('format') === 'json' || /application\/json/.test(header(req, 'accept') ?? '')
        ? JSON.stringify(hashes)
        : hashes.map((h) => `${h}\n`).join('');
    res.writeHead(202, {
      'Content-Type': body.startsWith('[') ? 'application/json; charset=utf-8' : 'text/plain; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  }

  /**
   * Streams the request body into blocks (hashed and stored as they fill). Enforces the size
   * limits and Content-Length; throws on a short body or a disconnect (nothing made visible).
   */
  private async receive(req: http.IncomingMessage, o: { md5: boolean }) {
    const cl = header(req, 'content-length');
    let expected: number | null = null;
    if (cl !== undefined) {
      if (!/^\d{1,16}$/.test(cl)) throw new HttpError(400, 'bad Content-Length');
      expected = Number(cl);
      if (expected > this.maxObject)
        throw new HttpError(413, `objects are limited to ${this.maxObject} bytes`);
    } else if (!/chunked/i.test(header(req, 'transfer-encoding') ?? '')) {
      throw new HttpError(411, 'Content-Length or chunked transfer encoding is required');
    }
    const up = new Upload(this.store, this.store.blocksize, this.store.inflight, o.md5);
    try {
      for await (const chunk of req as AsyncIterable<Buffer>) {
        if (up.bytes + chunk.length > this.maxObject) {
          throw new HttpError(413, `objects are limited to ${this.maxObject} bytes`);
        }
        await up.push(chunk);
      }
      if (!req.complete) throw new HttpError(400, 'the request body ended early');
      if (expected !== null && up.bytes !== expected) throw new HttpError(400, 'body length mismatch');
      const md5 = await up.finish();
      return { hashes: up.hashes, bytes: up.bytes, md5: o.md5 ? md5 : undefined };
    } catch (e) {
      await up.drain().catch(() => {});
      throw e;
    }
  }

  // ------------------------------------------------------------------ object

  private async object(req: http.IncomingMessage, res: http.ServerResponse, t: Required<Target>, m: string) {
    const { account, container, object } = t;
    if (!['PUT', 'DELETE', 'GET', 'HEAD', 'POST'].includes(m)) {
      throw new HttpError(405, `${m} is not allowed on an object`);
    }
    if (m === 'PUT') return this.putObject(req, res, t);
    if (m === 'DELETE') {
      if (!(await this.store.deleteObject(account, container, object)))
        throw new HttpError(404, 'no such object');
      res.writeHead(204);
      res.end();
      return;
    }
    const rec = await this.store.getObject(account, container, object);
    if (!rec) throw new HttpError(404, 'no such object');
    if (m === 'POST') return this.postObject(req, res, rec);
    if (t.query.has('hashmap')) {
      const fmt = t.query.get('format') ?? 'json';
      if (fmt !== 'json') throw new HttpError(400, 'only format=json hashmaps are served');
      const hashes = await this.store.hashes(rec);
      const body = JSON.stringify({
        block_hash: 'sha256',
        block_size: rec.blocksize,
        bytes: rec.bytes,
        hashes: hashes.length === 0 ? [ZERO_BLOCK] : hashes,
      });
      res.writeHead(200, {
        ...objectHeaders(rec),
        'Content-Type': 'application/json; charset=utf-8',
        'Content-Length': Buffer.byteLength(body),
      });
      res.end(m === 'HEAD' ? undefined : body);
      return;
    }
    return this.getObject(req, res, rec, m === 'HEAD');
  }

  private async putObject(req: http.IncomingMessage, res: http.ServerResponse, t: Required<Target>) {
    const { account, container, object } = t;
    if (!(await this.store.getContainer(account, container))) throw new HttpError(404, 'no such container');
    const contentType = header(req, 'content-type') ?? 'application/octet-stream';
    const meta = objectMeta(req);
    let rec: FileRecord;
    const source = header(req, 'x-archipelago-source-map');
    if (t.query.has('hashmap')) {
      const body = await readBody(req, hashmapLimit(this.maxObject, this.store.blocksize));
      const hm = parseHashmap(body, this.store.blocksize, this.maxObject);
      const missing = await this.store.missing(hm.hashes);
      if (missing.length > 0) {
        const text = JSON.stringify(missing);
        res.writeHead(409, {
          'Content-Type': 'application/json; charset=utf-8',
          'Content-Length': Buffer.byteLength(text),
        });
        res.end(text);
        return;
      }
      rec = await this.store.commit(account, container, object, {
        hashes: hm.hashes,
        bytes: hm.bytes,
        blocksize: this.store.blocksize,
        contentType: contentType.startsWith('application/json') ? 'application/octet-stream' : contentType,
        meta,
      });
    } else if (source !== undefined) {
      this.checkBridge(account);
      await drainBody(req, 0);
      if (!isMapName(source)) throw new HttpError(400, 'bad X-Archipelago-Source-Map');
      rec = await this.store.registerMap(account, container, object, source, { contentType, meta });
    } else {
      const want = header(req, 'etag')?.replace(/^"|"$/g, '').toLowerCase();
      const md5 = this.opts.md5 ?? true;
      const up = await this.receive(req, { md5: md5 || want !== undefined });
      if (want !== undefined && up.md5 !== want) {
        throw new HttpError(422, 'the body does not match its ETag (MD5); nothing was stored');
      }
      rec = await this.store.commit(account, container, object, {
        hashes: up.hashes,
        bytes: up.bytes,
        blocksize: this.store.blocksize,
        ...(md5 && up.md5 ? { etag: up.md5 } : {}),
        contentType,
        meta,
      });
    }
    res.writeHead(201, { ...objectHeaders(rec), 'Content-Length': 0 });
    res.end();
  }

  /** Bridge: clone the file into a new volume (X-Archipelago-Clone-To), no data copied. */
  private async postObject(req: http.IncomingMessage, res: http.ServerResponse, rec: FileRecord) {
    await drainBody(req, 64 * 1024);
    const vol = header(req, 'x-archipelago-clone-to');
    if (vol === undefined) {
      res.writeHead(202, { 'Content-Length': 0 }); // metadata update: accepted, not kept
      res.end();
      return;
    }
    this.checkBridge(rec.account);
    if (!isMapName(vol)) throw new HttpError(400, 'bad X-Archipelago-Clone-To');
    const sizeH = header(req, 'x-archipelago-volume-size');
    const size = sizeH === undefined ? undefined : Number(sizeH);
    if (size !== undefined && !Number.isSafeInteger(size))
      throw new HttpError(400, 'bad X-Archipelago-Volume-Size');
    if (rec.bytes === 0) throw new HttpError(409, 'an empty file cannot back a volume');
    const info = await this.store.cloneToVolume(rec, vol, size);
    const body = JSON.stringify({ volume: info.name, size: info.size, source: rec.map });
    res.writeHead(201, {
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  }

  private async getObject(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    rec: FileRecord,
    head: boolean,
  ) {
    const size = rec.bytes;
    const base = { ...objectHeaders(rec), 'Accept-Ranges': 'bytes' };
    const ranges = size === 0 ? null : parseRange(header(req, 'range'), size);
    if (ranges === 'unsatisfiable') {
      throw new HttpError(
        416,
        'range not satisfiable',
        { error: 'range not satisfiable' },
        {
          'Content-Range': `bytes */${size}`,
        },
      );
    }
    const entries = await this.store.entries(rec);
    if (ranges === null) {
      res.writeHead(200, { ...base, 'Content-Type': rec.contentType, 'Content-Length': size });
      if (head) return void res.end();
      await this.send(res, entries, rec.blocksize, 0, size - 1);
      res.end();
      return;
    }
    if (ranges.length === 1) {
      const r = ranges[0]!;
      res.writeHead(206, {
        ...base,
        'Content-Type': rec.contentType,
        'Content-Length': r.end - r.start + 1,
        'Content-Range': `bytes ${r.start}-${r.end}/${size}`,
      });
      if (head) return void res.end();
      await this.send(res, entries, rec.blocksize, r.start, r.end);
      res.end();
      return;
    }
    const boundary = randomBytes(12).toString('hex');
    const part = (r: ByteRange) =>
      `--${boundary}\r\nContent-Type: ${rec.contentType}\r\nContent-Range: bytes ${r.start}-${r.end}/${size}\r\n\r\n`;
    const tail = `--${boundary}--\r\n`;
    const length =
      ranges.reduce((s, r) => s + Buffer.byteLength(part(r)) + (r.end - r.start + 1) + 2, 0) + tail.length;
    res.writeHead(206, {
      ...base,
      'Content-Type': `multipart/byteranges; boundary=${boundary}`,
      'Content-Length': length,
    });
    if (head) return void res.end();
    for (const r of ranges) {
      if (!(await write(res, Buffer.from(part(r))))) return;
      if (!(await this.send(res, entries, rec.blocksize, r.start, r.end))) return;
      if (!(await write(res, Buffer.from('\r\n')))) return;
    }
    res.end(tail);
  }

  /**
   * Streams bytes [start, end] of a file in pieces of SEND_CHUNK bytes read into a small ring of
   * reused buffers (fresh multi-MiB buffers per read cost page faults and cold caches, which
   * halved throughput), with up to `2 * inflight` reads ahead of the socket. A buffer returns to
   * the ring once the socket has taken it. Resolves false when the client went away.
   */
  private async send(
    res: http.ServerResponse,
    entries: readonly { name: string; flags: number }[],
    bs: number,
    start: number,
    end: number,
  ): Promise<boolean> {
    const ahead = Math.max(2, 2 * this.store.inflight);
    const free: Buffer[] = [];
    const reads: Promise<Buffer>[] = [];
    let pos = start;
    const issue = () => {
      const i = Math.floor(pos / bs);
      const e = entries[i];
      if (!e) throw new HttpError(500, `block ${i} is missing from the map`);
      const off = pos - i * bs;
      const len = Math.min(SEND_CHUNK, bs - off, end + 1 - pos);
      const ring = free.pop() ?? Buffer.allocUnsafeSlow(SEND_CHUNK);
      const target = ring.subarray(0, len);
      const p = this.store.readBlockInto(e, off, target).then(() => target);
      p.catch(() => {});
      reads.push(p);
      pos += len;
    };
    while (pos <= end && reads.length < ahead) issue();
    while (reads.length > 0) {
      const buf = await reads.shift()!;
      const ok = await write(res, buf, () => free.push(Buffer.from(buf.buffer, buf.byteOffset, SEND_CHUNK)));
      if (!ok) return false;
      while (pos <= end && reads.length < ahead) issue();
    }
    return true;
  }
}

/** Read and write granularity of downloads. */
const SEND_CHUNK = 1024 * 1024;

// ------------------------------------------------------------------ helpers

function header(req: http.IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
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

function objectHeaders(rec: FileRecord): Record<string, string> {
  const h: Record<string, string> = {
    ETag: rec.etag,
    'X-Object-Hash': rec.hash,
    'X-Archipelago-Map': rec.map,
    'Last-Modified': new Date(rec.lastModified).toUTCString(),
    'X-Timestamp': (rec.lastModified / 1000).toFixed(5),
  };
  for (const [k, v] of Object.entries(rec.meta)) h[`X-Object-Meta-${k}`] = v;
  return h;
}

function objectMeta(req: http.IncomingMessage): Record<string, string> {
  const meta: Record<string, string> = {};
  let bytes = 0;
  let count = 0;
  for (const [k, v] of Object.entries(req.headers)) {
    if (!k.startsWith('x-object-meta-') || v === undefined) continue;
    const key = k.slice('x-object-meta-'.length);
    const val = Array.isArray(v) ? v.join(',') : v;
    bytes += key.length + val.length;
    if (++count > MAX_META_COUNT || bytes > MAX_META_BYTES) {
      throw new HttpError(
        400,
        `object metadata is limited to ${MAX_META_COUNT} items and ${MAX_META_BYTES} bytes`,
      );
    }
    if (key) meta[key] = val;
  }
  return meta;
}

const isMapName = (s: string) => /^[A-Za-z0-9][A-Za-z0-9._-]{0,81}$/.test(s);

/** Listing pagination: marker, end_marker, limit (Swift). */
function page<T>(rows: T[], q: URLSearchParams, key: (r: T) => string): T[] {
  const marker = q.get('marker');
  const endMarker = q.get('end_marker');
  const limitS = q.get('limit');
  let limit = LISTING_LIMIT;
  if (limitS !== null) {
    limit = Number(limitS);
    if (!Number.isSafeInteger(limit) || limit < 0) throw new HttpError(400, 'bad limit');
    limit = Math.min(limit, LISTING_LIMIT);
  }
  const out: T[] = [];
  for (const r of rows) {
    const k = key(r);
    if (marker !== null && k <= marker) continue;
    if (endMarker !== null && k >= endMarker) break;
    if (out.length >= limit) break;
    out.push(r);
  }
  return out;
}

/** Writes with back-pressure; `done` runs once the socket has taken `buf` (it may be reused). */
async function write(res: http.ServerResponse, buf: Buffer, done?: () => void): Promise<boolean> {
  if (res.destroyed) return false;
  const cb = done ? (err?: Error | null) => (err ? undefined : done()) : undefined;
  if (res.write(buf, cb)) return true;
  return new Promise<boolean>((resolve) => {
    const settle = (ok: boolean) => {
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(ok);
    };
    const onDrain = () => settle(true);
    const onClose = () => settle(false);
    res.on('drain', onDrain);
    res.on('close', onClose);
  });
}

/** Reads a small body whole, refusing more than `limit` bytes with 413. */
async function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  const cl = header(req, 'content-length');
  if (cl !== undefined && (!/^\d{1,16}$/.test(cl) || Number(cl) > limit)) {
    throw new HttpError(413, `this body is limited to ${limit} bytes`);
  }
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > limit) throw new HttpError(413, `this body is limited to ${limit} bytes`);
    parts.push(chunk);
  }
  if (!req.complete) throw new HttpError(400, 'the request body ended early');
  return Buffer.concat(parts);
}

async function drainBody(req: http.IncomingMessage, limit: number): Promise<void> {
  await readBody(req, limit);
}

/** Room for a hashmap of the largest object: 67 bytes a hash plus slack, at most 64 MiB. */
function hashmapLimit(maxObject: number, bs: number): number {
  return Math.min(64 * 1024 * 1024, 4096 + 70 * (Math.ceil(maxObject / bs) + 1));
}

function parseHashmap(body: Buffer, bs: number, maxObject: number): { bytes: number; hashes: string[] } {
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch {
    throw new HttpError(400, 'the hashmap is not JSON');
  }
  const o = v as { bytes?: unknown; hashes?: unknown; block_size?: unknown; block_hash?: unknown };
  if (!o || typeof o !== 'object' || !Array.isArray(o.hashes))
    throw new HttpError(400, 'the hashmap needs "hashes"');
  const bytes = o.bytes;
  if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes < 0) {
    throw new HttpError(400, 'the hashmap needs "bytes", an integer >= 0');
  }
  if (bytes > maxObject) throw new HttpError(413, `objects are limited to ${maxObject} bytes`);
  if (o.block_size !== undefined && o.block_size !== bs)
    throw new HttpError(400, `the block size here is ${bs}`);
  if (o.block_hash !== undefined && o.block_hash !== 'sha256')
    throw new HttpError(400, 'the block hash here is sha256');
  const hashes = o.hashes.map((h) => (typeof h === 'string' ? h.toLowerCase() : ''));
  if (!hashes.every(isContentName)) throw new HttpError(400, 'every hash must be 64 hex digits');
  const n = objectCount(bytes, bs);
  // Pithos stores an empty object as one zero-block hash.
  if (n === 0 && hashes.length === 1 && hashes[0] === ZERO_BLOCK) return { bytes, hashes: [] };
  if (hashes.length !== n) {
    throw new HttpError(400, `${bytes} bytes in ${bs}-byte blocks need ${n} hashes, got ${hashes.length}`);
  }
  return { bytes, hashes };
}
