/**
 * The bridges between files and volumes. They name maps of the whole store, so only the
 * `bridgeAccounts` may use them (every account when `auth` is false and no list is given).
 *
 *   PUT  /<a>/<c>/<o> + X-Archipelago-Source-Map: <map>   publish a snapshot (or hashed map) as a file
 *   POST /<a>/<c>/<o> + X-Archipelago-Clone-To: <volume>  clone the file into a new volume
 */
import type { GatewayContext, Handler, ObjectTarget } from './context.js';
import { drainBody, HttpError, header } from './http.js';
import { created, findObject, putHeaders } from './object.js';

const isMapName = (s: string) => /^[A-Za-z0-9][A-Za-z0-9._-]{0,81}$/.test(s);

/** Throws 403 unless `account` may use the bridges. */
function checkBridge(ctx: GatewayContext, account: string): void {
  const allowed = ctx.opts.bridgeAccounts;
  if (allowed ? allowed.includes(account) : ctx.opts.auth === false) return;
  throw new HttpError(403, `account ${account} may not use the volume bridges (bridgeAccounts)`);
}

/**
 * `PUT` + X-Archipelago-Source-Map: registers the map as a file, no data copied (a snapshot not
 * hashed yet is hashed first, as `vlmc hash`). 201 as any object PUT.
 */
export const publishMap: Handler<ObjectTarget> = async (ctx, req, res, t) => {
  const { contentType, meta } = await putHeaders(ctx, req, t);
  const source = header(req, 'x-archipelago-source-map')!;
  checkBridge(ctx, t.account);
  await drainBody(req, 0, ctx.bodyTimeout);
  if (!isMapName(source)) throw new HttpError(400, 'bad X-Archipelago-Source-Map');
  const rec = await ctx.store.registerMap(t.account, t.container, t.object, source, { contentType, meta });
  created(res, rec);
};

/**
 * `POST` + X-Archipelago-Clone-To (+ X-Archipelago-Volume-Size): a new copy-on-write volume
 * cloned from the file, no data copied; 201 `{volume, size, source}`.
 */
export const cloneToVolume: Handler<ObjectTarget> = async (ctx, req, res, t) => {
  const rec = await findObject(ctx, t);
  await drainBody(req, 64 * 1024, ctx.bodyTimeout);
  const vol = header(req, 'x-archipelago-clone-to')!;
  checkBridge(ctx, rec.account);
  if (!isMapName(vol)) throw new HttpError(400, 'bad X-Archipelago-Clone-To');
  const sizeH = header(req, 'x-archipelago-volume-size');
  const size = sizeH === undefined ? undefined : Number(sizeH);
  if (size !== undefined && !Number.isSafeInteger(size))
    throw new HttpError(400, 'bad X-Archipelago-Volume-Size');
  if (rec.bytes === 0) throw new HttpError(409, 'an empty file cannot back a volume');
  const info = await ctx.store.cloneToVolume(rec, vol, size);
  const body = JSON.stringify({ volume: info.name, size: info.size, source: rec.map });
  res.writeHead(201, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
};
