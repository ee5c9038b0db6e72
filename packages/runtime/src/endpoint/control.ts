import { connect, createServer, type Server } from 'node:net';
import { ArchipelagoError, type ErrorCode } from '@archipelago/libxseg';
import { unixSocketState, unlinkIfPresent } from '@archipelago/nbd';
import type { HostControlRequest } from './host.js';

/** A request to the process holding a mapped volume. */
export type ControlRequest =
  | { op: 'ping' }
  | { op: 'info' }
  | { op: 'snapshot'; snap: string }
  | { op: 'rollback'; snap: string }
  | { op: 'flatten' }
  | { op: 'close' }
  | { op: 'unmap' };

type Reply =
  | { ok: true; result: unknown }
  | { ok: false; error: { code: ErrorCode; message: string; details?: Record<string, unknown> } };

/** JSON has no bigint: epochs travel as decimal strings (as `--json` prints them). */
function bigintAsString(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}

/**
 * Serves the control channel: one JSON request per line, one JSON reply per line. Anything
 * malformed gets an error reply; the holder never dies from a client's bytes. Whatever is left at
 * `path` by a holder that died (kill -9) is replaced; a live process answering there is not: EBUSY.
 */
export async function serveControl<R extends { op: string } = ControlRequest>(
  path: string,
  handle: (req: R) => Promise<unknown>,
): Promise<Server> {
  if ((await unixSocketState(path)) === 'live') {
    throw new ArchipelagoError(
      'EBUSY',
      `the control socket ${path} is answered by a live process: is this volume mapped by another endpoint? (see "vlmc showmapped")`,
      { details: { control: path } },
    );
  }
  await unlinkIfPresent(path);
  const server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => sock.destroy());
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > 64 * 1024) {
        sock.destroy();
        return;
      }
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        void answer(line).then((r) => {
          if (!sock.destroyed) sock.write(`${JSON.stringify(r, bigintAsString)}\n`);
        });
        nl = buf.indexOf('\n');
      }
    });
  });
  async function answer(line: string): Promise<Reply> {
    try {
      const req = JSON.parse(line) as R;
      if (typeof req !== 'object' || req === null || typeof req.op !== 'string') throw new TypeError('no op');
      return { ok: true, result: await handle(req) };
    } catch (e) {
      if (ArchipelagoError.isInstance(e))
        return { ok: false, error: { code: e.code, message: e.message, details: e.details } };
      return {
        ok: false,
        error: { code: 'EINVAL', message: `bad control request: ${(e as Error).message}` },
      };
    }
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

/** Sends one request to a holder and returns its result, or throws its error. */
export function callControl(
  path: string,
  req: ControlRequest | HostControlRequest,
  timeoutMs = 120_000,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(
        new ArchipelagoError(
          'ETIMEDOUT',
          `the process holding the volume did not answer "${req.op}" in ${timeoutMs} ms`,
        ),
      );
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      sock.end();
      try {
        const reply = JSON.parse(buf.slice(0, nl)) as Reply;
        if (reply.ok) resolve(reply.result);
        else
          reject(
            new ArchipelagoError(reply.error.code, reply.error.message, {
              details: reply.error.details ?? {},
            }),
          );
      } catch (e) {
        reject(new ArchipelagoError('EIO', 'malformed reply from the volume holder', { cause: e }));
      }
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(
        new ArchipelagoError('EIO', `cannot reach the process holding the volume at ${path}: ${e.message}`, {
          cause: e,
        }),
      );
    });
    // Closed without an answer (the process went between accepting and answering): as a reset.
    sock.on('close', () => {
      clearTimeout(timer);
      const e = Object.assign(new Error('closed without an answer'), { code: 'ECONNRESET' });
      reject(
        new ArchipelagoError('EIO', `the process holding the volume at ${path} closed without an answer`, {
          cause: e,
        }),
      );
    });
  });
}
