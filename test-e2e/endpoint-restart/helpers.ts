/**
 * Helpers of the endpoint restart tests: a configuration in either wiring (embedded, the default;
 * or the daemons, `archipelago start`), the endpoint of a mapped volume killed with kill -9 and
 * mapped again, the volume's lock record, and qemu-io driven one command at a time.
 *
 * Every `vlmc` runs asynchronously (the clients' timing is measured in this process meanwhile).
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pidAlive } from '../../packages/libxseg/src/process.js';
import { makeConfig } from '../daemons/helpers.js';
import { ENV, Env, type Result, sh, VLMC } from '../lib/vlmc.js';

export type Mode = 'embedded' | 'daemons';

export interface Target {
  mode: Mode;
  dir: string;
  conf: string;
  runDir: string;
  vlmc(...args: string[]): Promise<Result & { json: unknown }>;
  /** Pid of a daemon (daemons mode), else null. */
  daemonPid(role: string): number | null;
  dispose(): Promise<void>;
}

export interface Mapped {
  volume: string;
  pid: number;
  uri: string;
  socket?: string;
  port?: number;
}

/** A fresh configuration; in daemons mode the four daemons are started. */
export async function makeTarget(mode: Mode): Promise<Target> {
  if (mode === 'embedded') {
    const env = await Env.create('restart');
    return {
      mode,
      dir: env.dir,
      conf: env.conf,
      runDir: join(env.dir, 'run'),
      vlmc: (...args) => env.vlmc(...args),
      daemonPid: () => null,
      dispose: () => env.dispose(),
    };
  }
  const c = makeConfig();
  const started = c.tool('start');
  if (started.status !== 0) {
    c.cleanup();
    throw new Error(`archipelago start failed: ${started.stderr}`);
  }
  return {
    mode,
    dir: c.dir,
    conf: c.conf,
    runDir: c.runDir,
    async vlmc(...args) {
      const r = await sh(process.execPath, [VLMC, '-c', c.conf, ...args]);
      return { ...r, json: args.includes('--json') ? parseOrUndefined(r.stdout) : undefined };
    },
    daemonPid: (role) => c.pidOf(role),
    dispose: async () => c.cleanup(),
  };
}

function parseOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export async function mapped(t: Target, volume: string): Promise<Mapped | undefined> {
  const r = await t.vlmc('showmapped', '--json');
  return (r.json as Mapped[] | undefined)?.find((e) => e.volume === volume);
}

export async function mapOk(t: Target, volume: string, ...args: string[]): Promise<Mapped> {
  const r = await t.vlmc('map', volume, ...args, '--json');
  if (r.code !== 0) throw new Error(`vlmc map ${volume} failed (${r.code}): ${r.stderr}`);
  return r.json as Mapped;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What a kill -9 of the endpoint and the `vlmc map` after it took. */
export interface Restart {
  killed: number;
  entry: Mapped;
  /** Date.now() when the kill was sent. */
  killAt: number;
  /** From the kill to `vlmc map` returning (the endpoint accepts connections again). */
  downMs: number;
  /** `vlmc map` alone. */
  mapMs: number;
}

/** Kills the endpoint with SIGKILL and maps the volume again at once (same arguments). */
export async function killAndRemap(
  t: Target,
  volume: string,
  pid: number,
  ...mapArgs: string[]
): Promise<Restart> {
  const killAt = Date.now();
  process.kill(pid, 'SIGKILL');
  while (pidAlive(pid)) await sleep(5);
  const t0 = Date.now();
  const entry = await mapOk(t, volume, ...mapArgs);
  const now = Date.now();
  return { killed: pid, entry, killAt, downMs: now - killAt, mapMs: now - t0 };
}

/** The lock record of `volume` in a file blocker's maps directory, or null when it is free. */
export function lockRecord(
  mapsDir: string,
  volume: string,
): { owner: string; process: { pid: number } | null } | null {
  const walk = (d: string): string | null => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) {
        const found = walk(p);
        if (found) return found;
      } else if (n === `${volume}_lock`) return p;
    }
    return null;
  };
  const file = walk(mapsDir);
  if (!file) return null;
  const [owner, proc] = readFileSync(file, 'utf8').split('\n');
  return { owner: owner ?? '', process: proc ? (JSON.parse(proc) as { pid: number }) : null };
}

/** One client request as the client saw it. */
export interface Op {
  start: number;
  end: number;
}

/** The stall a client saw across a restart: its longest request, and kill → first answer after it. */
export function stallOf(ops: Op[], killAt: number): { longestMs: number; firstAfterKillMs: number } {
  const longestMs = Math.max(...ops.map((o) => o.end - o.start));
  const after = ops.filter((o) => o.end > killAt).map((o) => o.end);
  return { longestMs, firstAfterKillMs: after.length ? Math.min(...after) - killAt : -1 };
}

/**
 * qemu-io on the nbd driver (reconnect-delay set), fed one command at a time on stdin: `cmd`
 * resolves with the command's output once qemu-io reported the op (or its failure).
 */
export class QemuIo {
  private out = '';
  private err = '';
  private waiting: ((text: string) => void) | null = null;
  private readonly exited: Promise<number | null>;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      this.out += d;
      this.settle();
    });
    child.stderr.on('data', (d: string) => {
      this.err += d;
    });
    this.exited = new Promise((resolve) =>
      child.on('exit', (code) => {
        this.waiting?.(`qemu-io exited (${code}) failed: ${this.err}\n`);
        this.waiting = null;
        resolve(code);
      }),
    );
  }

  static open(socket: string, volume: string, reconnectDelay: number): QemuIo {
    const opts = `driver=nbd,server.type=unix,server.path=${socket},export=${volume},reconnect-delay=${reconnectDelay}`;
    return new QemuIo(spawn('/usr/bin/qemu-io', ['--image-opts', opts], { env: ENV }));
  }

  get stderr(): string {
    return this.err;
  }

  private settle(): void {
    // One op's report ends with "... ops; ... sec (...)"; a failure is "<op> failed: <why>".
    const m = /(ops; [^\n]*\n|failed: [^\n]*\n)/.exec(this.out);
    if (!m || !this.waiting) return;
    const text = this.out.slice(0, m.index + m[0].length);
    this.out = this.out.slice(m.index + m[0].length);
    const w = this.waiting;
    this.waiting = null;
    w(text.replaceAll('qemu-io> ', ''));
  }

  /** Runs one qemu-io command; `ok` is false when qemu-io reported an error. */
  cmd(line: string): Promise<Op & { text: string; ok: boolean }> {
    const start = Date.now();
    return new Promise((resolve) => {
      this.waiting = (text) =>
        resolve({ start, end: Date.now(), text, ok: !/failed|error|verification/i.test(text) });
      this.child.stdin.write(`${line}\n`);
    });
  }

  async quit(): Promise<number | null> {
    this.child.stdin.end('quit\n');
    return this.exited;
  }

  kill(): void {
    this.child.kill('SIGKILL');
  }
}
