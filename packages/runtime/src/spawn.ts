/**
 * Starting a background process that outlives its starter: the `vlmc map` endpoint and each peer
 * of `archipelago start`. One function, one set of failure messages.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { ArchipelagoError, type ErrorCode } from '@archipelago/libxseg';

/** How the starter knows the process is ready. */
export type Readiness<T> =
  /**
   * The process prints one line on stdout: `READY <json>` (the value resolved) or
   * `ERROR <json {code, message, details}>` (rethrown as that ArchipelagoError).
   */
  | { kind: 'line' }
  /** `check()` is polled every 25 ms until it gives a value (e.g. the peer's pidfile names it). */
  | { kind: 'poll'; check: (pid: number) => T | undefined };

export interface SpawnOptions<T> {
  /** The script run with this Node.js (`process.execPath`). */
  entry: string;
  args?: string[];
  /** Added to this process's environment. */
  env?: NodeJS.ProcessEnv;
  /** stderr (and, with `poll`, stdout) are appended here. */
  logFile: string;
  readiness: Readiness<T>;
  timeoutMs: number;
  /** Names the process in errors: "the endpoint", "mapperd". */
  what: string;
  /** Where to point in errors, when the process logs elsewhere (default `logFile`). */
  seeLog?: string;
  /** Options for Node itself, before the entry (default `IO_NODE_ARGS`). */
  nodeArgs?: string[];
}

/**
 * Node options of the long-lived processes that move data (the `vlmc map` endpoint, the peers).
 * V8 starts the old generation with a small limit (24 MB here) and, with a young generation grown
 * to about the slack under that limit, starts incremental marking of the old space again and again
 * while a client streams writes: 80-90 mark-compacts in 5 s of 1 MiB writes, each freeing nearly
 * nothing, against 1 with a 64 MB initial limit, and 1 MiB writes at QD16 through `vlmc map` went
 * from 1,105-1,157 to 2,119-2,184 IOPS (alternated runs, quiet machine). A limit, not a reservation:
 * an idle process's memory does not change.
 */
export const IO_NODE_ARGS: readonly string[] = ['--initial-old-space-size=64'];

/** The last meaningful line a process wrote to its log since `from`, for an error message. */
export function logTail(path: string, from: number): string {
  try {
    const buf = readFileSync(path);
    const text = buf.subarray(Math.min(from, buf.length)).toString('utf8');
    const lines = text.split('\n').filter((l) => l.trim() !== '');
    const plain = lines.filter((l) => !l.startsWith('{'));
    const last = plain[plain.length - 1];
    if (last !== undefined) return last;
    for (let i = lines.length - 1; i >= 0; i--) {
      try {
        const o = JSON.parse(lines[i] as string) as { level?: number; msg?: string };
        if ((o.level ?? 0) >= 50 && o.msg) return o.msg;
      } catch {
        // not JSON
      }
    }
  } catch {
    // no log
  }
  return '';
}

const sizeOf = (path: string) => {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
};

/**
 * Spawns `entry` detached (its own session, not killed with the starter) and waits until it is
 * ready. A process that exits first fails the start with EIO quoting its log; one not ready
 * within `timeoutMs` is killed and fails it with ETIMEDOUT.
 */
export function spawnDetached<T>(o: SpawnOptions<T>): Promise<{ pid: number; ready: T }> {
  mkdirSync(dirname(o.logFile), { recursive: true });
  const from = sizeOf(o.logFile);
  const log = openSync(o.logFile, 'a', 0o660);
  const byLine = o.readiness.kind === 'line';
  const child = spawn(process.execPath, [...(o.nodeArgs ?? IO_NODE_ARGS), o.entry, ...(o.args ?? [])], {
    detached: true,
    stdio: ['ignore', byLine ? 'pipe' : log, log],
    env: { ...process.env, ...o.env },
  });
  closeSync(log);
  const see = o.seeLog ?? o.logFile;
  return new Promise((resolve, reject) => {
    let settled = false;
    let poll: NodeJS.Timeout | undefined;
    const finish = (err: Error | null, ready?: T) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearInterval(poll);
      child.stdout?.destroy();
      child.unref();
      if (err) reject(err);
      else resolve({ pid: child.pid as number, ready: ready as T });
    };
    const timer = setTimeout(() => {
      child.kill(byLine ? 'SIGTERM' : 'SIGKILL');
      finish(
        new ArchipelagoError(
          'ETIMEDOUT',
          `${o.what} did not become ready within ${o.timeoutMs / 1000} s; see ${see}`,
          { details: { logfile: see } },
        ),
      );
    }, o.timeoutMs);
    child.on('error', (e) =>
      finish(
        new ArchipelagoError('EIO', `${o.what}: could not spawn the process: ${e.message}`, { cause: e }),
      ),
    );
    // With a READY line, wait for stdout to close too: a last ERROR line may come after 'exit'.
    child.on(byLine ? 'close' : 'exit', (code: number | null, signal: string | null) => {
      const why = logTail(o.logFile, from);
      finish(
        new ArchipelagoError(
          'EIO',
          `${o.what} failed to start (exit ${code ?? signal})${why ? `: ${why}` : ''}; see ${see}`,
          { details: { logfile: see, exit: code ?? signal } },
        ),
      );
    });
    const r = o.readiness;
    if (r.kind === 'poll') {
      const check = () => {
        const v = child.pid === undefined ? undefined : r.check(child.pid);
        if (v !== undefined) finish(null, v);
      };
      poll = setInterval(check, 25);
      return;
    }
    let out = '';
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      out += chunk;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      const line = out.slice(0, nl);
      if (line.startsWith('READY ')) return finish(null, JSON.parse(line.slice(6)) as T);
      if (line.startsWith('ERROR ')) {
        const e = JSON.parse(line.slice(6)) as {
          code: ErrorCode;
          message: string;
          details?: Record<string, unknown>;
        };
        return finish(new ArchipelagoError(e.code, e.message, { details: e.details ?? {} }));
      }
      finish(new ArchipelagoError('EIO', `unexpected output from ${o.what}: ${line}; see ${see}`));
    });
  });
}

/** What a process started by `spawnDetached` with `{ kind: 'line' }` prints when it is ready. */
export function reportReady(value: unknown): void {
  process.stdout.write(`READY ${JSON.stringify(value)}\n`);
}

/** What such a process prints when it failed to start (then it exits). */
export function reportStartFailure(err: { code: string; message: string; details?: unknown }): void {
  process.stdout.write(`ERROR ${JSON.stringify(err)}\n`);
}
