/**
 * Crash points of the life-cycle operations (rollback-crash.test.ts, flatten-crash.test.ts): the
 * harness of crash.ts, plus a second way to stop an operation midway, failing its k-th blocker
 * call of any kind (reads and lock calls too, not only changes) with EIO, the process going on;
 * and the check that a gc after either frees nothing that a live map or trash entry names.
 */
import type { Blocker } from '@archipelago/blocker';
import { ArchipelagoError } from '@archipelago/libxseg';
import { ObjFlag } from '@archipelago/mapfile';
import { afterAll, beforeAll } from 'vitest';
import { collectGarbage, type GcReport } from '../gc.js';
import type { Mapper } from '../mapper.js';
import {
  type CrashStore,
  fileStore,
  mapperOver,
  observe,
  runCrashing,
  type StoreState,
  victim,
} from './crash.js';
import { put } from './stack.js';

/** The Blocker methods a call counts (every call to the store; `flush`, `close` excepted). */
const CALLS = new Set([
  'read',
  'readInto',
  'write',
  'writeFull',
  'copy',
  'delete',
  'info',
  'exists',
  'list',
  'acquire',
  'renew',
  'release',
  'breakLock',
  'requestRelease',
  'lockInfo',
  'lockOwner',
  'hash',
]);

/**
 * `b` counting its calls in `calls` (as `method name`); the `failAt`-th (1-based; null: none)
 * fails with EIO instead of reaching the store. Only that one: later calls go through.
 */
export function failingAt(b: Blocker, failAt: number | null, calls: string[]): Blocker {
  return new Proxy(b, {
    get(target, prop) {
      const v: unknown = Reflect.get(target, prop, target);
      if (typeof v !== 'function') return v;
      if (typeof prop !== 'string' || !CALLS.has(prop)) return v.bind(target);
      return (...args: unknown[]) => {
        calls.push(`${prop} ${String(args[0] ?? '')}`);
        if (calls.length === failAt) {
          const e = new ArchipelagoError('EIO', `injected fault: call ${failAt}, ${prop} ${String(args[0])}`);
          if (prop === 'list') {
            // An AsyncIterable: fails when iterated.
            return {
              [Symbol.asyncIterator]() {
                return { next: () => Promise.reject(e) };
              },
            };
          }
          return Promise.reject(e);
        }
        return v.apply(target, args);
      };
    },
  });
}

/**
 * Runs `op` on a mapper over the store as a process whose `k`-th blocker call fails (k = null:
 * none), then that process closes its mapper as it would on the error and goes away (killed:
 * whatever lock it could not release belongs to a dead process). Resolves with every call it
 * made and the error `op` ended with.
 */
export async function runFailing(
  store: CrashStore,
  k: number | null,
  op: (m: Mapper, b: Blocker) => Promise<unknown>,
): Promise<{ calls: string[]; error: unknown }> {
  const v = await victim();
  const inner = store.open(v.proc);
  const calls: string[] = [];
  const b = failingAt(inner, k, calls);
  const m = mapperOver(b);
  let error: unknown = null;
  try {
    await op(m, b);
  } catch (e) {
    error = e;
  }
  await m.close().catch(() => {});
  await v.kill();
  await inner.close();
  return { calls, error };
}

/** Data objects named by a live map or a trash entry that the store does not have. */
export async function missingNamed(m: Mapper, b: Blocker): Promise<string[]> {
  const maps = (await m.list()).filter((v) => !v.incomplete).map((v) => v.name);
  const out: string[] = [];
  for (const name of [...maps, ...(await m.listTrash()).map((t) => t.entry)]) {
    for (const e of await m.entries(name)) {
      if (e.flags & ObjFlag.ZERO) continue;
      if (!(await b.exists(e.name))) out.push(`${name}: ${e.name}`);
    }
  }
  return out;
}

/** An hour ahead: every object is older than gc's cutoff (graceMs 0). */
const later = () => Date.now() + 3_600_000;

/**
 * The next process: with `gcFirst`, runs a gc at once; uses `names` (`info`, then opens every
 * volume: what settles an interrupted operation, ops/repair.ts), observes the store, runs a gc (no trash purge: the trash entries are
 * roots), and observes again. Returns the state before and after the gc, what the gc did, and the
 * objects live maps or trash entries name that are missing after it.
 */
export async function reopenAndCollect(
  store: CrashStore,
  names: Iterable<string>,
  opts: { gcFirst?: boolean } = {},
): Promise<{
  state: StoreState;
  incomplete: string[];
  afterGc: StoreState;
  gc: GcReport;
  missing: string[];
  firstGc?: GcReport;
}> {
  const b = store.open();
  try {
    // A gc may come first, before any use of the names settles what the operation left.
    const firstGc = opts.gcFirst
      ? await collectGarbage({ blockerm: b, blockerb: b, graceMs: 0, now: later })
      : undefined;
    const m = mapperOver(b);
    for (const n of names) await m.info(n).catch(() => {});
    for (const v of await m.list()) if (!v.incomplete && !v.readonly) await m.openVolume(v.name);
    await m.close();
    const look = mapperOver(b);
    const { state, incomplete } = await observe(look, b);
    await look.close();
    const gc = await collectGarbage({ blockerm: b, blockerb: b, graceMs: 0, now: later });
    const after = mapperOver(b);
    const afterGc = (await observe(after, b)).state;
    const missing = await missingNamed(after, b);
    await after.close();
    return { state, incomplete, afterGc, gc, missing, ...(firstGc ? { firstGc } : {}) };
  } finally {
    await b.close();
  }
}

/** Every live map's and trash entry's contents, as a fresh process sees them (no repair). */
export async function stateOf(store: CrashStore): Promise<StoreState> {
  const b = store.open();
  const m = mapperOver(b);
  try {
    return (await observe(m, b)).state;
  } finally {
    await m.close();
    await b.close();
  }
}

/** A file store made by `setup` and saved, and what `op` does to it when nothing stops it. */
export interface LifeCrashStore {
  store: CrashStore;
  /** The state before `op`, and after it. */
  before: StoreState;
  done: StoreState;
  /** Store changes and blocker calls of a whole run of `op`. */
  changes: number;
  calls: number;
}

export async function lifeCrashStore(
  setup: (m: Mapper, b: Blocker) => Promise<void>,
  op: (m: Mapper, b: Blocker) => Promise<unknown>,
): Promise<LifeCrashStore> {
  const store = await fileStore();
  const b = store.open();
  await setup(mapperOver(b), b);
  await b.close();
  await store.save();
  const before = await stateOf(store);
  const dry = await runCrashing(store, null, op);
  if (dry.error !== null) throw dry.error;
  const done = await stateOf(store);
  await store.restore();
  const counted = await runFailing(store, null, op);
  if (counted.error !== null) throw counted.error;
  return { store, before, done, changes: dry.changes.length, calls: counted.calls.length };
}

/**
 * Stops `op` on the saved store after each of its store changes (a kill) in turn, then calls
 * `check` (the next process's view), told where it stopped.
 */
export async function eachKill(
  s: LifeCrashStore,
  op: (m: Mapper, b: Blocker) => Promise<unknown>,
  check: (at: string) => Promise<void>,
): Promise<void> {
  if (s.changes < 3) throw new Error(`only ${s.changes} changes: not the operation meant`);
  for (let k = 1; k <= s.changes; k++) {
    await s.store.restore();
    const run = await runCrashing(s.store, k, op);
    if (!run.crashed) throw new Error(`no crash after change ${k}`);
    await check(`kill after change ${k}/${s.changes} (${run.changes[k - 1]})`);
  }
}

/** The same with each of its blocker calls failing in turn (the process goes on). */
export async function eachFailure(
  s: LifeCrashStore,
  op: (m: Mapper, b: Blocker) => Promise<unknown>,
  check: (at: string) => Promise<void>,
): Promise<void> {
  for (let k = 1; k <= s.calls; k++) {
    await s.store.restore();
    const run = await runFailing(s.store, k, op);
    await check(
      `call ${k}/${s.calls} (${run.calls[k - 1]}) failing (${run.error ? String(run.error) : 'no error'})`,
    );
  }
}

/**
 * Makes the store of a crash-point test file before its tests (`lifeCrashStore`) and disposes
 * of it after them: read `.life` inside the tests.
 */
export function useLifeCrashStore(
  setup: (m: Mapper, b: Blocker) => Promise<void>,
  op: (m: Mapper, b: Blocker) => Promise<unknown>,
): { readonly life: LifeCrashStore } {
  const ref: { life?: LifeCrashStore } = {};
  beforeAll(async () => {
    ref.life = await lifeCrashStore(setup, op);
  });
  afterAll(() => ref.life?.store.dispose());
  return {
    get life() {
      if (!ref.life) throw new Error('the crash store is made before the tests');
      return ref.life;
    },
  };
}

/** `v`: 40 blocks (two map blocks) with data in blocks 0, 1 and 33, and its snapshot `s0`. */
export async function originWithSnapshot(m: Mapper, b: Blocker): Promise<void> {
  const BS = 4096;
  await m.create('v', { size: 40 * BS, blocksize: BS });
  for (const i of [0, 1, 33]) await put(m, b, 'v', i * BS, Buffer.alloc(BS, 10 + i));
  await m.snapshot('v', 's0');
}

/** The names the life-cycle crash tests use (their next process settles each). */
export const LIFE_NAMES = ['v', 's0', 'c', 'gone'];
