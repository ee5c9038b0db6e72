/** The container resource: `PUT`, `DELETE`, `HEAD` and `GET /<account>/<container>` (its listing). */
import type { ContainerTarget, GatewayContext, Handler } from './context.js';
import { HttpError } from './http.js';
import { sendListing } from './listing.js';
import type { FileRecord } from './store.js';

/** `PUT /<a>/<c>`: 201 created, 202 when it existed. */
export const createContainer: Handler<ContainerTarget> = async (ctx, _req, res, t) => {
  const created = await ctx.store.putContainer(t.account, t.container);
  res.writeHead(created ? 201 : 202, { 'Content-Length': 0 });
  res.end();
};

/** `DELETE /<a>/<c>`: 204; 404 when there is none, 409 when it is not empty. */
export const deleteContainer: Handler<ContainerTarget> = async (ctx, _req, res, t) => {
  const r = await ctx.store.deleteContainer(t.account, t.container);
  if (r === 'notfound') throw new HttpError(404, 'no such container');
  if (r === 'notempty') throw new HttpError(409, 'the container is not empty');
  res.writeHead(204);
  res.end();
};

/** Throws 404 unless the target's container exists. */
export async function requireContainer(ctx: GatewayContext, t: ContainerTarget): Promise<void> {
  if (!(await ctx.store.getContainer(t.account, t.container))) throw new HttpError(404, 'no such container');
}

/** Any other method: 404 when the container does not exist, else 405. */
export const containerNotAllowed: Handler<ContainerTarget> = async (ctx, req, _res, t) => {
  await requireContainer(ctx, t);
  throw new HttpError(405, `${req.method ?? 'GET'} is not allowed on a container`);
};

/**
 * `HEAD /<a>/<c>`: 204 with the counts, block size and hash; `GET`: the object listing, with
 * `prefix` and `delimiter` (common prefixes become `subdir` rows) and pagination.
 */
export const showContainer: Handler<ContainerTarget> = async (ctx, req, res, t) => {
  await requireContainer(ctx, t);
  const objs = await ctx.store.listObjects(t.account, t.container);
  const headers = {
    'X-Container-Object-Count': String(objs.length),
    'X-Container-Bytes-Used': String(objs.reduce((s, o) => s + o.bytes, 0)),
    'X-Container-Block-Size': String(ctx.store.blocksize),
    'X-Container-Block-Hash': 'sha256',
    'X-Timestamp': (Date.now() / 1000).toFixed(5),
  };
  if (req.method === 'HEAD') {
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
  const json = (r: Row) =>
    r.rec
      ? {
          name: r.name,
          bytes: r.rec.bytes,
          hash: r.rec.etag,
          x_object_hash: r.rec.hash,
          content_type: r.rec.contentType,
          last_modified: new Date(r.rec.lastModified).toISOString().replace('Z', ''),
        }
      : { subdir: r.name };
  sendListing(req, res, t.query, headers, rows, (r) => r.name, json);
};
