/**
 * The object (file) resource: `PUT` (streamed upload), `GET`/`HEAD` (with ranges), `DELETE`, and
 * `POST` without a bridge header. The hashmap PUT/GET (hashmap.ts) and the bridges (bridges.ts)
 * are answered by their own modules with the helpers here.
 */
import { randomBytes } from 'node:crypto';
import type * as http from 'node:http';
import { receiveBlocks } from './blocks.js';
import { requireContainer } from './container.js';
import type { GatewayContext, Handler, ObjectTarget } from './context.js';
import { drainBody, HttpError, header, write } from './http.js';
import { type ByteRange, parseRange } from './ranges.js';
import type { FileRecord } from './store.js';

const MAX_META_BYTES = 4096;
const MAX_META_COUNT = 90;
/** Read and write granularity of downloads. */
const SEND_CHUNK = 1024 * 1024;

/** What every object PUT takes from its request, once the container is known to exist. */
export interface PutHeaders {
  contentType: string;
  meta: Record<string, string>;
}

/** For every object PUT: 404 unless the container exists; then Content-Type and X-Object-Meta-*. */
export async function putHeaders(
  ctx: GatewayContext,
  req: http.IncomingMessage,
  t: ObjectTarget,
): Promise<PutHeaders> {
  await requireContainer(ctx, t);
  return { contentType: header(req, 'content-type') ?? 'application/octet-stream', meta: objectMeta(req) };
}

/** The answer to every object PUT: 201 with the object's headers. */
export function created(res: http.ServerResponse, rec: FileRecord): void {
  res.writeHead(201, { ...objectHeaders(rec), 'Content-Length': 0 });
  res.end();
}

/**
 * `PUT /<a>/<c>/<o>` with the bytes as body: hashed on the fly, each block stored once; the MD5
 * is the ETag (422 when the request's ETag differs, nothing stored).
 */
export const putObject: Handler<ObjectTarget> = async (ctx, req, res, t) => {
  const { contentType, meta } = await putHeaders(ctx, req, t);
  const want = header(req, 'etag')?.replace(/^"|"$/g, '').toLowerCase();
  const rec = await ctx.store.upload(`PUT ${t.account}/${t.container}/${t.object}`, async () => {
    const up = await receiveBlocks(ctx, req, { md5: true });
    if (want !== undefined && up.md5 !== want) {
      throw new HttpError(422, 'the body does not match its ETag (MD5); nothing was stored');
    }
    return ctx.store.commit(t.account, t.container, t.object, {
      hashes: up.hashes,
      bytes: up.bytes,
      blocksize: ctx.store.blocksize,
      ...(up.md5 ? { md5: up.md5 } : {}),
      contentType,
      meta,
    });
  });
  created(res, rec);
};

/** `DELETE /<a>/<c>/<o>`: 204, or 404. */
export const deleteObject: Handler<ObjectTarget> = async (ctx, _req, res, t) => {
  if (!(await ctx.store.deleteObject(t.account, t.container, t.object))) {
    throw new HttpError(404, 'no such object');
  }
  res.writeHead(204);
  res.end();
};

/** The object's record; 404 when there is none. */
export async function findObject(ctx: GatewayContext, t: ObjectTarget): Promise<FileRecord> {
  const rec = await ctx.store.getObject(t.account, t.container, t.object);
  if (!rec) throw new HttpError(404, 'no such object');
  return rec;
}

/** `POST /<a>/<c>/<o>` without a bridge header: a metadata update, accepted (202) and not kept. */
export const postObject: Handler<ObjectTarget> = async (ctx, req, res, t) => {
  await findObject(ctx, t);
  await drainBody(req, 64 * 1024, ctx.bodyTimeout);
  res.writeHead(202, { 'Content-Length': 0 });
  res.end();
};

/**
 * `GET`/`HEAD /<a>/<c>/<o>`: the bytes; a single range (206 + Content-Range), several
 * (206 multipart/byteranges), unsatisfiable (416); a malformed Range is ignored (200).
 */
export const getObject: Handler<ObjectTarget> = async (ctx, req, res, t) => {
  const rec = await ctx.store.withMd5(await findObject(ctx, t));
  const head = req.method === 'HEAD';
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
  const entries = await ctx.store.entries(rec);
  if (ranges === null) {
    res.writeHead(200, { ...base, 'Content-Type': rec.contentType, 'Content-Length': size });
    if (head) return void res.end();
    await send(ctx, res, entries, rec.blocksize, 0, size - 1);
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
    await send(ctx, res, entries, rec.blocksize, r.start, r.end);
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
    if (!(await send(ctx, res, entries, rec.blocksize, r.start, r.end))) return;
    if (!(await write(res, Buffer.from('\r\n')))) return;
  }
  res.end(tail);
};

/**
 * Streams bytes [start, end] of a file in pieces of SEND_CHUNK bytes read into a small ring of
 * reused buffers (fresh multi-MiB buffers per read cost page faults and cold caches, which
 * halved throughput), with up to `2 * inflight` reads ahead of the socket. A buffer returns to
 * the ring once the socket has taken it. Resolves false when the client went away.
 */
async function send(
  ctx: GatewayContext,
  res: http.ServerResponse,
  entries: readonly { name: string; flags: number }[],
  bs: number,
  start: number,
  end: number,
): Promise<boolean> {
  const store = ctx.store;
  const ahead = Math.max(2, 2 * store.inflight);
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
    const p = store.readBlockInto(e, off, target).then(() => target);
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

/** The headers of every object answer: ETag, X-Object-Hash, X-Archipelago-Map, times, metadata. */
export function objectHeaders(rec: FileRecord): Record<string, string> {
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

/** The request's X-Object-Meta-* headers (at most MAX_META_COUNT, MAX_META_BYTES in all; else 400). */
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
