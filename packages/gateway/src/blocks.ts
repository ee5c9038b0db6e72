/**
 * Block upload: a request body cut into blocks, each hashed and stored once. Serves the Pithos
 * block POST (`POST /<a>/<c>`, application/octet-stream) and the streamed object PUT.
 */
import type * as http from 'node:http';
import { requireContainer } from './container.js';
import type { ContainerTarget, GatewayContext, Handler } from './context.js';
import { bodyChunks, drainBody, HttpError, header, wantsJson } from './http.js';
import { Upload } from './store.js';

/** What a body came to: its block hashes, length, and MD5 when asked for. */
export interface Received {
  hashes: string[];
  bytes: number;
  md5: string | undefined;
}

/**
 * `POST /<a>/<c>` (404 unless the container exists): with `Content-Type:
 * application/octet-stream`, 202 and the hashes of the blocks stored (lines, or JSON with
 * `?format=json` / `Accept`); any other body is a metadata update, accepted and ignored (204).
 */
export const postBlocks: Handler<ContainerTarget> = async (ctx, req, res, t) => {
  await requireContainer(ctx, t);
  const ct = (header(req, 'content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  if (ct !== 'application/octet-stream') {
    // Metadata updates are accepted and ignored (no container metadata is kept).
    await drainBody(req, 64 * 1024, ctx.bodyTimeout);
    res.writeHead(204);
    res.end();
    return;
  }
  const up = await receiveBlocks(ctx, req, { md5: false });
  const hashes = up.hashes;
  const body =
    t.query.get('format') === 'json' || wantsJson(req)
      ? JSON.stringify(hashes)
      : hashes.map((h) => `${h}\n`).join('');
  res.writeHead(202, {
    'Content-Type': body.startsWith('[') ? 'application/json; charset=utf-8' : 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
};

/**
 * Streams the request body into blocks (hashed and stored as they fill). Enforces the size
 * limits and Content-Length; throws on a short body or a disconnect (nothing made visible).
 */
export async function receiveBlocks(
  ctx: GatewayContext,
  req: http.IncomingMessage,
  o: { md5: boolean },
): Promise<Received> {
  const { store, maxObject } = ctx;
  const cl = header(req, 'content-length');
  let expected: number | null = null;
  if (cl !== undefined) {
    if (!/^\d{1,16}$/.test(cl)) throw new HttpError(400, 'bad Content-Length');
    expected = Number(cl);
    if (expected > maxObject) throw new HttpError(413, `objects are limited to ${maxObject} bytes`);
  } else if (!/chunked/i.test(header(req, 'transfer-encoding') ?? '')) {
    throw new HttpError(411, 'Content-Length or chunked transfer encoding is required');
  }
  const up = new Upload(store, store.blocksize, store.inflight, o.md5);
  try {
    for await (const chunk of bodyChunks(req, ctx.bodyTimeout)) {
      if (up.bytes + chunk.length > maxObject) {
        throw new HttpError(413, `objects are limited to ${maxObject} bytes`);
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
