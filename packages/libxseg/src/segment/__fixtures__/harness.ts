// Shared by the multi-process segment tests: fresh segment names (destroyed after each test),
// forked peers (`peer.mjs`, killed after each test) driven by IPC, and small waiting helpers.
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach } from 'vitest';
import { type PortStats, Segment } from '../index.js';

const PEER = fileURLToPath(new URL('./peer.mjs', import.meta.url));

export type Msg = { ev: string; [k: string]: unknown };

export interface Peer {
  child: ChildProcess;
  /** The next message of kind `ev` (an `error` message from the peer throws). */
  next: (ev: string) => Promise<Msg>;
  /** The peer's port counters and its CPU use so far. */
  stats: () => Promise<{ stats: PortStats; cpu: NodeJS.CpuUsage }>;
}

/** Registers the after-each clean-up; returns the helpers of one test file. */
export function harness(prefix: string) {
  let counter = 0;
  const made: string[] = [];
  const children: ChildProcess[] = [];

  afterEach(() => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const n of made.splice(0)) {
      try {
        Segment.destroy(n);
      } catch {
        // already gone
      }
    }
  });

  const fresh = (geom = '4:8:64:12'): string => {
    const name = `${prefix}-${process.pid}-${counter++}`;
    made.push(name);
    return `posix:${name}:${geom}`;
  };

  const peer = (): Peer => {
    const child = fork(PEER, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children.push(child);
    const inbox: Msg[] = [];
    const waiters: Array<() => void> = [];
    child.on('message', (m) => {
      inbox.push(m as Msg);
      for (const w of waiters.splice(0)) w();
    });
    const next = async (ev: string): Promise<Msg> => {
      for (;;) {
        const i = inbox.findIndex((m) => m.ev === ev || m.ev === 'error');
        if (i !== -1) {
          const [m] = inbox.splice(i, 1);
          if (m?.ev === 'error') throw new Error(`peer: ${String(m.message)}`);
          return m as Msg;
        }
        await new Promise<void>((r) => waiters.push(r));
      }
    };
    const stats = async () => {
      child.send({ cmd: 'stats' });
      const m = await next('stats');
      return { stats: m.stats as PortStats, cpu: m.cpu as NodeJS.CpuUsage };
    };
    return { child, next, stats };
  };

  /** A peer serving static port `port` (`mode`: echo, hold, slow; `opts` go with the command). */
  const serve = async (spec: string, port: number, mode = 'echo', opts: Record<string, unknown> = {}) => {
    const p = peer();
    await p.next('started');
    p.child.send({ cmd: 'serve', spec, port, mode, ...opts });
    const ready = await p.next('ready');
    return { ...p, ready };
  };

  return { fresh, peer, serve };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const until = async (cond: () => boolean, ms = 10_000) => {
  const t = Date.now();
  while (!cond()) {
    if (Date.now() - t > ms) throw new Error('timed out');
    await sleep(5);
  }
};

export const killed = (c: ChildProcess) =>
  new Promise<void>((r) => {
    if (c.exitCode !== null || c.signalCode !== null) r();
    else c.once('exit', () => r());
  });
