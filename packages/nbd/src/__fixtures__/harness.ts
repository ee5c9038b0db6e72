/**
 * Test harness: a server on a temp unix socket (per test, or per describe block), memory exports
 * from a table, a capturing logger, and a client-binary runner.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { MemoryExport, type MemoryExportOptions } from '../exports.js';
import { NbdServer } from '../server.js';
import type { NbdExport, NbdLogger, NbdServerOptions } from '../types.js';

export interface LogEntry {
  level: 'info' | 'warn' | 'error' | 'debug';
  obj: object | string;
  msg: string | undefined;
}

export function captureLogger(): { logger: NbdLogger; entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const at =
    (level: LogEntry['level']) =>
    (obj: object | string, msg?: string): void => {
      entries.push({ level, obj, msg });
      if (process.env.NBD_TEST_LOG) console.error(level, JSON.stringify(obj), msg ?? '');
    };
  return { logger: { info: at('info'), warn: at('warn'), error: at('error'), debug: at('debug') }, entries };
}

export interface Fixture {
  server: NbdServer;
  dir: string;
  sock: string;
  uri(name: string): string;
  logs: LogEntry[];
  close(): Promise<void>;
}

export async function startServer(
  exports: NbdExport[],
  opts: Partial<NbdServerOptions> = {},
): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), 'nbd-test-'));
  const sock = join(dir, 'nbd.sock');
  const { logger, entries } = captureLogger();
  const byName = new Map(exports.map((e) => [e.name, e]));
  const server = new NbdServer({
    exports: (name) => byName.get(name),
    list: () => [...byName.keys()],
    logger,
    ...opts,
  });
  await server.listen({ path: sock });
  return {
    server,
    dir,
    sock,
    uri: (name) => `nbd+unix:///${name}?socket=${sock}`,
    logs: entries,
    close: async () => {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Serves `exports` to the tests of the enclosing describe block: the server starts before them and
 * closes after them, and the block fails if a promise rejection went unhandled meanwhile (and, with
 * `noErrorLogs`, if the server logged an error). The fixture's fields are there once tests run.
 */
export function serveDuringSuite(exports: NbdExport[], opts: { noErrorLogs?: boolean } = {}): Fixture {
  const fx = {} as Fixture;
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => unhandled.push(e);
  beforeAll(async () => {
    process.on('unhandledRejection', onUnhandled);
    Object.assign(fx, await startServer(exports));
  });
  afterAll(async () => {
    process.off('unhandledRejection', onUnhandled);
    await fx.close?.();
    expect(unhandled).toEqual([]);
    if (opts.noErrorLogs) expect(fx.logs.filter((l) => l.level === 'error')).toEqual([]);
  });
  return fx;
}

/** Memory exports from a table: `{ mem: { size }, ro: { size, readonly: true } }` → `{ mem, ro }`. */
export function memoryExports<K extends string>(
  specs: Record<K, Omit<MemoryExportOptions, 'name'>>,
): Record<K, MemoryExport> {
  const out = {} as Record<K, MemoryExport>;
  for (const name of Object.keys(specs) as K[]) out[name] = new MemoryExport({ name, ...specs[name] });
  return out;
}

/** Debian package that provides each client binary. */
const PACKAGES: Record<string, string> = {
  nbdinfo: 'libnbd-bin',
  nbdcopy: 'libnbd-bin',
  nbdsh: 'libnbd-bin + python3-libnbd',
  'qemu-img': 'qemu-utils',
  'qemu-io': 'qemu-utils',
  fio: 'fio',
  'nbd-client': 'nbd-client',
};

export interface RunOptions {
  timeoutMs?: number;
  cwd?: string;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * nbdsh runs `python3 -m nbd` from PATH; a pyenv/venv python3 first in PATH lacks the Debian
 * python3-libnbd module, so the system directories go first for every client we spawn.
 */
export const clientEnv = { ...process.env, PATH: `/usr/bin:/bin:${process.env.PATH ?? ''}`, LC_ALL: 'C' };

/** Runs a client binary. A missing binary is a test failure with a clear message, never a skip. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, env: clientEnv, encoding: 'utf8', cwd: opts.cwd },
      (err, stdout, stderr) => {
        if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') {
          reject(
            new Error(
              `required NBD client '${cmd}' is not installed (Debian package ${PACKAGES[cmd] ?? '?'}); ` +
                'these interop tests need it',
            ),
          );
          return;
        }
        if (err && (err as { killed?: boolean }).killed) {
          reject(new Error(`${cmd} ${args.join(' ')} timed out after ${timeoutMs} ms\n${stderr}`));
          return;
        }
        const code = err ? Number((err as { code?: unknown }).code ?? 1) : 0;
        resolve({ code: Number.isFinite(code) ? code : 1, stdout, stderr });
      },
    );
  });
}

/** Like run(), but a non-zero exit status throws with the client's stderr. */
export async function runOk(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  }
  return r;
}

/** A deferred promise. */
export function defer<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `cond` every 10 ms until it holds; throws after `ms`. */
export async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Per-test state of a describe block that starts its own server per test: `fx` (set it) is
 * closed and `clients` (push them) destroyed after each test.
 */
export function perTest<C extends { destroy(): void }>(): { fx: Fixture | undefined; clients: C[] } {
  const state: { fx: Fixture | undefined; clients: C[] } = { fx: undefined, clients: [] };
  afterEach(async () => {
    for (const c of state.clients.splice(0)) c.destroy();
    await state.fx?.close();
    state.fx = undefined;
  });
  return state;
}
