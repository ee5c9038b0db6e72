/**
 * The hashmap of an object (Pithos): `GET /<a>/<c>/<o>?hashmap&format=json` serves it, and
 * `PUT /<a>/<c>/<o>?hashmap` makes a file of blocks already stored (409 and the missing hashes
 * otherwise: upload them with the block POST, then PUT again).
 */
import { objectCount, ZERO_BLOCK } from '@archipelago/mapfile';
import type { Handler, ObjectTarget } from './context.js';
import { HttpError, readBody } from './http.js';
import { created, findObject, objectHeaders, putHeaders } from './object.js';
import { isContentName } from './store.js';

/** `GET`/`HEAD ...?hashmap`: `{block_hash, block_size, bytes, hashes}` (only format=json). */
export const getHashmap: Handler<ObjectTarget> = async (ctx, req, res, t) => {
  const rec = await ctx.store.withMd5(await findObject(ctx, t));
  const fmt = t.query.get('format') ?? 'json';
  if (fmt !== 'json') throw new HttpError(400, 'only format=json hashmaps are served');
  const hashes = await ctx.store.hashes(rec);
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
  res.end(req.method === 'HEAD' ? undefined : body);
};

/** `PUT ...?hashmap` with `{bytes, hashes}`: 201 when every block is stored, else 409 + the missing. */
export const putHashmap: Handler<ObjectTarget> = async (ctx, req, res, t) => {
  const { contentType, meta } = await putHeaders(ctx, req, t);
  const { store, maxObject } = ctx;
  const body = await readBody(req, hashmapLimit(maxObject, store.blocksize), ctx.bodyTimeout);
  const hm = parseHashmap(body, store.blocksize, maxObject);
  // The check that every block is stored and the commit naming them, under one gc hold.
  const rec = await store.upload(`hashmap PUT ${t.account}/${t.container}/${t.object}`, async () => {
    const missing = await store.missing(hm.hashes);
    if (missing.length > 0) return missing;
    return store.commit(t.account, t.container, t.object, {
      hashes: hm.hashes,
      bytes: hm.bytes,
      blocksize: store.blocksize,
      contentType: contentType.startsWith('application/json') ? 'application/octet-stream' : contentType,
      meta,
    });
  });
  if (Array.isArray(rec)) {
    const text = JSON.stringify(rec);
    res.writeHead(409, {
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': Buffer.byteLength(text),
    });
    res.end(text);
    return;
  }
  created(res, rec);
};

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
