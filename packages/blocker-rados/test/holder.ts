/**
 * A lock holder in a process of its own, for the fencing tests: `startHolder` spawns
 * test/child/lock-holder.ts (its own librados client, its own address) and follows what it
 * reports; `stopHolders` kills them; `removeBlocklisted` removes the blocklist entries of the
 * holders started here that a test fenced.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { RadosBlocker } from '../src/index.js';
import { ensureCluster, openRados } from './cluster.js';
import { runOk } from './run.js';

const CHILD = join(import.meta.dirname, 'child');
/**
 * No admin socket for the `ceph` CLI: the test cluster's conf gives every client.admin the same
 * one, and while the holder that owns it is stopped, a new client waits 10 s to find out.
 */
const NO_ASOK = ['--admin-socket='];

export interface Event {
  event: string;
  n?: number;
  addr?: string;
  client?: string;
  pid?: number;
  code?: string;
  message?: string;
  fenced?: boolean;
  /** CLOCK_MONOTONIC, µs (release requests). */
  t?: number;
  by?: string;
  how?: string;
}

/** A lock-holder child and what it said so far. */
export interface Holder {
  child: ChildProcess;
  events: Event[];
  ready: Event;
  /** Resolves with the first event (from index `from` on) that `match` accepts. */
  next(match: (e: Event) => boolean, from?: number, timeoutMs?: number): Promise<Event>;
  stderr(): string;
}

const children: ChildProcess[] = [];
const addresses = new Set<string>();

/** Starts a holder of lock `volume` (pool `maps` unless `pool`), resolved once it holds it. */
export async function startHolder(o: {
  pool?: string;
  namespace: string;
  volume: string;
  leaseMs: number;
  host?: string;
  writeEveryMs?: number;
  identity?: string;
  watchRelease?: boolean;
  yieldOnRequest?: boolean;
  writeOnly?: boolean;
}): Promise<Holder> {
  const { conf } = await ensureCluster();
  const spec = { conf, pool: 'maps', identity: 'holder_1', writeEveryMs: 50, ...o };
  const child = spawn(
    process.execPath,
    ['--conditions=source', '--import', './ts-register.mjs', 'lock-holder.ts'],
    {
      cwd: CHILD,
      env: { ...process.env, ARCHIP_HOLDER: JSON.stringify(spec) },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  children.push(child);
  const events: Event[] = [];
  const waiters = new Set<() => void>();
  let err = '';
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    events.push(JSON.parse(line) as Event);
    for (const w of [...waiters]) w();
  });
  const next = (match: (e: Event) => boolean, from = 0, timeoutMs = 20_000) =>
    new Promise<Event>((resolve, reject) => {
      const check = () => {
        const e = events.slice(from).find(match);
        if (e === undefined) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve(e);
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(
          new Error(
            `the holder did not report it within ${timeoutMs} ms; it said ${JSON.stringify(events.slice(-5))}\n${err}`,
          ),
        );
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  const ready = await next((e) => e.event === 'ready', 0, 30_000);
  addresses.add(ready.addr as string);
  return { child, events, ready, next, stderr: () => err };
}

/** Kills every holder started so far (a stopped one is continued first). */
export function stopHolders(): void {
  for (const c of children.splice(0)) {
    c.kill('SIGCONT');
    c.kill('SIGKILL');
  }
}

/** `ceph osd blocklist ls`: the blocklisted addresses (one `<addr> <until>` a line). */
export async function blocklist(): Promise<string[]> {
  const { conf } = await ensureCluster();
  const r = await runOk('ceph', ['-c', conf, ...NO_ASOK, 'osd', 'blocklist', 'ls']);
  return r.stdout
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((a) => a !== '');
}

/** Removes the blocklist entries of the holders started here (the ones a test fenced). */
export async function removeBlocklisted(): Promise<void> {
  const { conf } = await ensureCluster();
  const listed = new Set(await blocklist());
  for (const addr of addresses) {
    if (listed.has(addr)) await runOk('ceph', ['-c', conf, ...NO_ASOK, 'osd', 'blocklist', 'rm', addr]);
  }
  addresses.clear();
}

const opened: RadosBlocker[] = [];

/** A RadosBlocker on pool `maps` of namespace `namespace` (blocklisting for 600 s), closed by `closeOpened`. */
export async function openFencer(namespace: string, identity: string, extra = {}): Promise<RadosBlocker> {
  const b = await openRados({ pool: 'maps', namespace, identity, blocklistExpireSeconds: 600, ...extra });
  opened.push(b);
  return b;
}

/** Stops the holders and closes the blockers `openFencer` opened (afterEach of the fencing tests). */
export async function closeOpened(): Promise<void> {
  stopHolders();
  await Promise.all(opened.splice(0).map((b) => b.close()));
}

/** The counter a holder (or writer) last wrote into `<name>_data`. */
export async function counter(b: RadosBlocker, name: string): Promise<number> {
  return Number((await b.read(`${name}_data`, 0, 12)).toString());
}

/**
 * Continues the stopped `h` and asserts it was fenced: its next write fails with EIO `fenced`, and
 * nothing it writes lands in `<name>_data` (the counter read with `b` stays where it was).
 */
export async function expectFencedOnContinue(h: Holder, b: RadosBlocker, name: string): Promise<void> {
  const { expect } = await import('vitest');
  const landed = await counter(b, name);
  const after = h.events.length;
  h.child.kill('SIGCONT');
  const failed = await h.next((e) => e.event === 'write-failed', after);
  expect(failed).toMatchObject({ code: 'EIO', fenced: true });
  await new Promise((r) => setTimeout(r, 300));
  expect(await counter(b, name)).toBe(landed);
  expect(h.events.filter((e) => e.event === 'wrote' && (e.n ?? 0) > landed)).toEqual([]);
}
