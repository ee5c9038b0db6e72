/**
 * The crash-point harness, in the style of LevelDB's fault-injection env: an operation runs over a
 * `FaultyBlocker` that "crashes" the process after its k-th store-changing call, and a fresh
 * mapper (a new process, in effect) then looks at what is left.
 *
 * - One store holds maps, data and locks (the mapper's blockerm and blockerb are the same
 *   blocker), so that `crashAfter(k)` counts every change of the operation in the order it made
 *   them. Files (FileBlocker on a temporary directory, /dev/shm when there is one: the crash is a
 *   process crash, not a power cut) or memory (MemoryBlocker on one MemoryStore).
 * - The crashed mapper holds its locks as a real process of this host (a `sleep` child), which is
 *   killed at the crash: its locks then belong to a dead process, as after kill -9, and the next
 *   acquire must take them over.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, mkdtemp, rm, stat } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type Blocker,
  currentBoot,
  currentProcess,
  deadHolder,
  FaultyBlocker,
  type LockProcess,
  processStart,
} from '@archipelago/blocker';
import { MemoryBlocker, MemoryStore } from '@archipelago/blocker/test';
import { FileBlocker } from '@archipelago/blocker-file';
import { ArchipelagoError } from '@archipelago/libxseg';
import { ObjFlag } from '@archipelago/mapfile';
import { Mapper } from '../mapper.js';
import { get } from './stack.js';

export const IDENTITY = 'crashhost_embedded';

/** Maps, data and locks of one host, in one store that survives the processes using it. */
export interface CrashStore {
  readonly kind: 'file' | 'memory';
  /** A blocker over the store, for process `proc` (default: this one), as `identity` (another host). */
  open(proc?: LockProcess, identity?: string): Blocker;
  /** Empties the store. */
  clear(): Promise<void>;
  /** Remembers the store's contents; `restore` goes back to them. */
  save(): Promise<void>;
  restore(): Promise<void>;
  dispose(): Promise<void>;
}

/** A file store in a fresh temporary directory. */
export async function fileStore(): Promise<CrashStore> {
  const base = (await stat('/dev/shm').catch(() => null)) ? '/dev/shm' : tmpdir();
  const root = await mkdtemp(join(base, 'archip-crash-'));
  const dir = join(root, 'store');
  const saved = join(root, 'saved');
  return {
    kind: 'file',
    open: (proc, identity = IDENTITY) => {
      const b = new FileBlocker({ dir, identity, lockPollMs: 5 });
      return proc ? asProcess(b, proc) : b;
    },
    clear: () => rm(dir, { recursive: true, force: true }),
    async save() {
      await rm(saved, { recursive: true, force: true });
      await cp(dir, saved, { recursive: true });
    },
    async restore() {
      await rm(dir, { recursive: true, force: true });
      await cp(saved, dir, { recursive: true });
    },
    dispose: () => rm(root, { recursive: true, force: true }),
  };
}

/** A memory store. */
export async function memoryStore(): Promise<CrashStore> {
  const store = new MemoryStore();
  let saved: { objects: Map<string, Buffer>; locks: typeof store.locks } | null = null;
  return {
    kind: 'memory',
    open: (proc, identity = IDENTITY) =>
      new MemoryBlocker({ store, identity, lockPollMs: 5, ...(proc ? { process: proc } : {}) }),
    async clear() {
      store.objects.clear();
      store.locks.clear();
    },
    async save() {
      saved = {
        objects: new Map([...store.objects].map(([k, v]) => [k, Buffer.from(v)])),
        locks: new Map(store.locks),
      };
    },
    async restore() {
      if (!saved) throw new Error('restore before save');
      store.objects.clear();
      store.locks.clear();
      for (const [k, v] of saved.objects) store.objects.set(k, Buffer.from(v));
      for (const [k, v] of saved.locks) store.locks.set(k, v);
    },
    async dispose() {},
  };
}

/**
 * `b` with its locks taken and renewed for process `proc` (FileBlocker has no option for it; the
 * contract's `as` does it per call).
 */
export function asProcess(b: Blocker, proc: LockProcess): Blocker {
  return new Proxy(b, {
    get(target, prop) {
      if (prop === 'acquire')
        return (name: string, o: Parameters<Blocker['acquire']>[1] = {}) =>
          target.acquire(name, { ...o, as: o.as ?? proc });
      if (prop === 'renew')
        return (name: string, o: Parameters<Blocker['renew']>[1] = {}) =>
          target.renew(name, { ...o, as: o.as ?? proc });
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

/** A live process of this host that a crash kills: the crashed mapper's locks name it. */
export interface Victim {
  readonly proc: LockProcess;
  kill(): Promise<void>;
}

export async function victim(): Promise<Victim> {
  const child: ChildProcess = spawn('sleep', ['600'], { stdio: 'ignore' });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  const pid = child.pid!;
  const proc: LockProcess = { host: hostname(), boot: currentBoot(), pid, start: processStart(pid) ?? '0' };
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    proc,
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** What one map is, as a user sees it: how it reads, and a snapshot's entries. */
export interface MapState {
  readonly: boolean;
  size: number;
  /** SHA-256 of the volume's bytes. */
  bytes: string;
  /** A snapshot's entries (`name flags` per block); null for a writable volume. */
  entries: string[] | null;
}

export type StoreState = Record<string, MapState>;

/**
 * Every live map of the store, and every map marked incomplete (as `incomplete: name`). Trash
 * entries are in the state too, as `trash:<original name>:<n>` (the n-th entry of that name,
 * oldest first: their internal names hold the removal time, which differs from run to run).
 */
export async function observe(m: Mapper, b: Blocker): Promise<{ state: StoreState; incomplete: string[] }> {
  const state: StoreState = {};
  const incomplete: string[] = [];
  for (const v of await m.list()) {
    if (v.incomplete) {
      incomplete.push(v.name);
      continue;
    }
    const bytes = await get(m, b, v.name, 0, v.size);
    const entries = v.readonly ? (await m.entries(v.name)).map((e) => `${e.name} ${e.flags}`) : null;
    state[v.name] = {
      readonly: v.readonly,
      size: v.size,
      bytes: createHash('sha256').update(bytes).digest('hex').slice(0, 16),
      entries,
    };
  }
  const seen = new Map<string, number>();
  for (const t of await m.listTrash()) {
    const n = seen.get(t.name) ?? 0;
    seen.set(t.name, n + 1);
    const entries = await m.entries(t.entry);
    const parts = await Promise.all(
      entries.map((e) =>
        e.flags & ObjFlag.ZERO
          ? Buffer.alloc(t.blocksize)
          : b.read(e.name, 0, t.blocksize, { missingOk: true }),
      ),
    );
    state[`trash:${t.name}:${n}`] = {
      readonly: t.kind === 'snapshot',
      size: t.size,
      bytes: createHash('sha256').update(Buffer.concat(parts).subarray(0, t.size)).digest('hex').slice(0, 16),
      entries: entries.map((e) => `${e.name} ${e.flags}`),
    };
  }
  return { state, incomplete };
}

/** Names of the live maps and trash entries (the maps whose objects are in use). */
async function liveMaps(m: Mapper): Promise<string[]> {
  const names = (await m.list()).filter((v) => !v.incomplete).map((v) => v.name);
  return [...names, ...(await m.listTrash()).map((t) => t.entry)];
}

/**
 * Invariant 1: no object a live map (or trash entry) names WRITABLE is named by another one.
 * Returns the violations, as sentences.
 */
export async function aliasing(m: Mapper): Promise<string[]> {
  const namedBy = new Map<string, Array<{ map: string; writable: boolean }>>();
  for (const v of await liveMaps(m)) {
    for (const e of await m.entries(v)) {
      if (e.flags & ObjFlag.ZERO) continue;
      const list = namedBy.get(e.name) ?? [];
      list.push({ map: v, writable: (e.flags & ObjFlag.WRITABLE) !== 0 });
      namedBy.set(e.name, list);
    }
  }
  const out: string[] = [];
  for (const [obj, maps] of namedBy) {
    const owners = new Set(maps.map((x) => x.map));
    if (owners.size > 1 && maps.some((x) => x.writable))
      out.push(
        `${obj} is WRITABLE in ${maps.filter((x) => x.writable).map((x) => x.map)} and named by ${[...owners]}`,
      );
  }
  return out;
}

/**
 * Invariant 4: every lock left in the store on `names` is free, or held by a live process (none
 * should be, once every mapper closed), or held by a dead one and taken over by the next acquire.
 * Returns the violations.
 */
export async function leftLocks(store: CrashStore, names: Iterable<string>): Promise<string[]> {
  const b = store.open();
  const out: string[] = [];
  try {
    for (const name of names) {
      const rec = await b.lockInfo(name);
      if (rec === null) continue;
      if (rec.process === null) {
        out.push(`${name}: held by the host with no process (nobody takes it over)`);
        continue;
      }
      if (deadHolder(rec, currentProcess()) === null) {
        out.push(`${name}: still held by live process ${rec.process.pid} after every mapper closed`);
        continue;
      }
      const r = await b.acquire(name, { wait: false });
      if (!r.took) out.push(`${name}: the dead holder's lock was not taken over`);
      await b.release(name);
    }
  } finally {
    await b.close();
  }
  return out;
}

/** The ArchipelagoError code of `p`'s rejection, or 'ok'. */
export async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    if (ArchipelagoError.isInstance(e)) return e.code;
    throw e;
  }
}

/** A mapper over `b` for both maps and data, as the harness runs them. */
export function mapperOver(b: Blocker): Mapper {
  return new Mapper({ blockerm: b, blockerb: b, lockTimeoutMs: 200, parallelism: 4 });
}

/**
 * Runs `op` on a mapper over the store as a process that crashes after the `k`-th change
 * (k = null: never), kills that process, and closes what it had (in-flight calls settle first).
 * Resolves with the store changes the run made and whether it crashed.
 */
export async function runCrashing(
  store: CrashStore,
  k: number | null,
  op: (m: Mapper, b: Blocker) => Promise<unknown>,
): Promise<{ changes: string[]; crashed: boolean; error: unknown }> {
  const v = await victim();
  const inner = store.open(v.proc);
  const faulty = new FaultyBlocker(inner);
  faulty.crashAfter(k);
  const m = mapperOver(faulty);
  let error: unknown = null;
  try {
    await op(m, faulty);
  } catch (e) {
    error = e;
  }
  const crashed = faulty.crashed;
  if (!crashed) await m.close();
  await v.kill();
  // A crashed mapper can do nothing more: its calls fail. Its calls in flight finish first
  // (close waits for them), as a killed process's system calls complete before it is gone.
  await m.close().catch(() => {});
  await inner.close();
  return { changes: [...faulty.changes], crashed, error };
}
