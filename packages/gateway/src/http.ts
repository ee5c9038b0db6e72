/** HTTP helpers every resource uses: errors and their answers, headers, bodies, back-pressure. */
import type * as http from 'node:http';
import { ArchipelagoError } from '@archipelago/libxseg';
import type { Logger } from '@archipelago/mapper';
import { NameError } from './names.js';

/** An error answered with `status` and a JSON body (`{error: message}` unless `body` is given). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly body?: unknown,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** HTTP status of an `ArchipelagoError` code (500 for the others). */
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

/**
 * Answers a failed request: `HttpError` as it says, a bad name 400, an `ArchipelagoError` by its
 * code, anything else 500 (logged). A request whose body was not read to its end gets
 * `Connection: close`; once headers are out, the connection is cut instead.
 */
export function sendError(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  e: unknown,
  logger: Logger | undefined,
): void {
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
    logger?.error({ err: String(e), url: req.url?.slice(0, 200) }, 'gateway: request failed');
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

/** The first value of a request header. */
export function header(req: http.IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The request's `Accept` names JSON (the `format` query, where there is one, comes first). */
export function wantsJson(req: http.IncomingMessage): boolean {
  return /application\/json/.test(header(req, 'accept') ?? '');
}

/** Writes with back-pressure; `done` runs once the socket has taken `buf` (it may be reused). */
export async function write(res: http.ServerResponse, buf: Buffer, done?: () => void): Promise<boolean> {
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

/**
 * The chunks of a request body, in order. When no byte arrives for `idleMs` while the consumer
 * waits for the next chunk (time it spends on a chunk does not count), throws a 408 `HttpError`:
 * the error answer then closes the connection, the rest of the body unread. `idleMs` 0: no limit.
 * A consumer that stops early for another reason ends the stream (as `for await` on it does).
 */
export async function* bodyChunks(req: http.IncomingMessage, idleMs: number): AsyncGenerator<Buffer> {
  const it = (req as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  let waiting = false;
  let stall: ((e: HttpError) => void) | undefined;
  const stalled = new Promise<never>((_, reject) => {
    stall = reject;
  });
  stalled.catch(() => {});
  const timer =
    idleMs > 0
      ? setTimeout(() => {
          if (waiting)
            stall?.(new HttpError(408, `the request body stalled (no bytes for ${idleMs / 1000} s)`));
        }, idleMs)
      : undefined;
  let done = false;
  let timedOut = false;
  try {
    for (;;) {
      waiting = true;
      timer?.refresh();
      let r: IteratorResult<Buffer>;
      try {
        r = timer ? await Promise.race([it.next(), stalled]) : await it.next();
      } catch (e) {
        timedOut = e instanceof HttpError && e.status === 408;
        throw e;
      }
      waiting = false;
      if (r.done) {
        done = true;
        return;
      }
      yield r.value;
    }
  } finally {
    clearTimeout(timer);
    if (!done && !timedOut) await it.return?.();
  }
}

/** Reads a small body whole, refusing more than `limit` bytes with 413 (408 if it stalls `idleMs`). */
export async function readBody(req: http.IncomingMessage, limit: number, idleMs: number): Promise<Buffer> {
  const cl = header(req, 'content-length');
  if (cl !== undefined && (!/^\d{1,16}$/.test(cl) || Number(cl) > limit)) {
    throw new HttpError(413, `this body is limited to ${limit} bytes`);
  }
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of bodyChunks(req, idleMs)) {
    n += chunk.length;
    if (n > limit) throw new HttpError(413, `this body is limited to ${limit} bytes`);
    parts.push(chunk);
  }
  if (!req.complete) throw new HttpError(400, 'the request body ended early');
  return Buffer.concat(parts);
}

/** Reads and forgets a small body (at most `limit` bytes, else 413; 408 if it stalls `idleMs`). */
export async function drainBody(req: http.IncomingMessage, limit: number, idleMs: number): Promise<void> {
  await readBody(req, limit, idleMs);
}
