/**
 * Crash points (docs/ARCHITECTURE.md, "Crash-atomic map operations"): every multi-step operation
 * of the mapper, crashed after each of its store changes in turn, leaves a store that the next
 * process finds done or not done, with
 * 1. no object a live map names WRITABLE named by another live map,
 * 2. every snapshot as it was (entries, and the bytes of the objects they name),
 * 3. every acknowledged write readable from the volume it was written to,
 * 4. no lock without a live holder that the next acquire does not take over,
 * and that the next operations on every name succeed.
 *
 * For each operation: a dry run counts its store changes N (`FaultyBlocker.changes`) and gives
 * the "done" state; then for k = 1..N the operation runs on the saved starting store and crashes
 * after its k-th change (`crashAfter(k)`), its process is killed, and a fresh mapper (a new
 * process) repairs by using every name (`info`, then opening each volume, as any next command
 * does) and is checked against the invariants.
 */
import { createHash } from 'node:crypto';
import type { Blocker } from '@archipelago/blocker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  aliasing,
  type CrashStore,
  fileStore,
  leftLocks,
  mapperOver,
  memoryStore,
  observe,
  outcome,
  runCrashing,
  type StoreState,
} from './__fixtures__/crash.js';
import { get, put } from './__fixtures__/stack.js';
import type { Mapper } from './mapper.js';
import { trashName } from './ops/trash.js';

const BS = 4096;
/** 40 blocks: two map blocks (32 entries each at this block size). */
const BLOCKS = 40;

/** The bytes a test writes into block `index` of `vol` (generation `gen`). */
function pattern(vol: string, index: number, gen: number, length = BS): Buffer {
  const seed = createHash('sha256').update(`${vol}/${index}/${gen}`).digest();
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i += seed.length) seed.copy(out, i);
  return out;
}

/**
 * The starting store: volume `v` (39.5 blocks, so that growing zeroes a tail) with data in both
 * map blocks, snapshot `s0` of it, then writes that copy up (block 1) and fill a zero block (5);
 * a removed volume `gone` (its name has a deleted map, so its epoch goes on).
 */
async function base(m: Mapper, b: Blocker): Promise<void> {
  await m.create('v', { size: BLOCKS * BS - BS / 2, blocksize: BS });
  for (const i of [0, 1, 33]) await put(m, b, 'v', i * BS, pattern('v', i, 0));
  await put(m, b, 'v', 38 * BS, pattern('v', 38, 0, BS + BS / 2));
  await m.snapshot('v', 's0');
  await put(m, b, 'v', 1 * BS, pattern('v', 1, 1));
  await put(m, b, 'v', 5 * BS, pattern('v', 5, 1));
  await m.create('gone', { size: 4 * BS, blocksize: BS });
  await put(m, b, 'gone', 0, pattern('gone', 0, 0));
  await m.remove('gone');
  await m.close();
}

/** A v1 map (0.3.x) stored as `archip_leg`, with one block of data, added to the base. */
async function withLegacy(m: Mapper, b: Blocker): Promise<void> {
  await base(m, b);
  const size = 3 * 4 * 1024 * 1024;
  const head = Buffer.alloc(12);
  head.writeUInt32LE(1, 0);
  head.writeBigUInt64LE(BigInt(size), 4);
  const digest = createHash('sha256').update('leg_0').digest();
  const zero = createHash('sha256').update('').digest();
  const entry = (flag: number, d: Buffer) => Buffer.concat([Buffer.from([flag]), d]);
  await b.writeFull('archip_leg', Buffer.concat([head, entry(1, digest), entry(0, zero), entry(0, zero)]));
  await b.writeFull(`archip_${digest.toString('hex')}`, pattern('leg', 0, 0, 64));
}

/** The base, with snapshot `s0` removed too (the trash holds `gone` and `s0`). */
async function withSnapshotInTrash(m: Mapper, b: Blocker): Promise<void> {
  await base(m, b);
  const next = mapperOver(b);
  await next.remove('s0');
  await next.close();
}

/** The base, and `c`, a clone of `s0` with one block of its own (ops/flatten.ts). */
async function withClone(m: Mapper, b: Blocker): Promise<void> {
  await base(m, b);
  const n = mapperOver(b);
  await n.clone('s0', 'c');
  await put(n, b, 'c', 2 * BS, pattern('c', 2, 0));
  await n.close();
}

/** A write the operation saw acknowledged: it must read back after any later crash. */
interface Acked {
  vol: string;
  offset: number;
  data: Buffer;
}

interface Scenario {
  name: string;
  setup?: (m: Mapper, b: Blocker) => Promise<void>;
  op: (m: Mapper, b: Blocker, acked: Acked[]) => Promise<unknown>;
  /**
   * A sequence of operations: a crash may leave the store between two of them, so instead of
   * "done or not done", every map must be as it was before or after (a snapshot never changes),
   * and every write acknowledged before the crash reads back.
   */
  sequence?: boolean;
}

/** Writes `data` at `offset` of `vol` and notes it acknowledged. */
async function ackedPut(m: Mapper, b: Blocker, acked: Acked[], vol: string, offset: number, data: Buffer) {
  await put(m, b, vol, offset, data);
  acked.push({ vol, offset, data });
}

const scenarios: Scenario[] = [
  { name: 'create', op: (m) => m.create('n', { size: BLOCKS * BS, blocksize: BS }) },
  { name: 'create over a deleted name', op: (m) => m.create('gone', { size: BLOCKS * BS, blocksize: BS }) },
  { name: 'clone', op: (m) => m.clone('s0', 'c', { size: 50 * BS }) },
  { name: 'snapshot', op: (m) => m.snapshot('v', 's1') },
  { name: 'rename a volume', op: (m) => m.rename('v', 'w') },
  { name: 'rename a volume to a deleted name', op: (m) => m.rename('v', 'gone') },
  { name: 'rename a snapshot', op: (m) => m.rename('s0', 't') },
  { name: 'resize: grow', op: (m) => m.resize('v', 70 * BS) },
  { name: 'resize: shrink', op: (m) => m.resize('v', 20 * BS) },
  { name: 'remove a volume', op: (m) => m.remove('v') },
  { name: 'remove a snapshot', op: (m) => m.remove('s0') },
  { name: 'restore a volume from the trash', op: (m) => m.restoreTrash('gone') },
  { name: 'restore a snapshot from the trash', setup: withSnapshotInTrash, op: (m) => m.restoreTrash('s0') },
  {
    name: 'purge a trash entry',
    setup: withSnapshotInTrash,
    op: async (m) => {
      const entry = (await m.listTrash()).find((t) => t.name === 'gone')?.entry;
      return m.purgeTrash(entry ?? trashName('gone', 0)); // (a retry after it: ENOENT)
    },
  },
  {
    // Entry by entry: a crash leaves some purged and the others as they were.
    name: 'purge the trash',
    setup: withSnapshotInTrash,
    sequence: true,
    op: (m) => m.purgeExpiredTrash(Date.now()),
  },
  { name: 'hash a snapshot', op: (m) => m.hash('s0') },
  { name: 'write with copy-up', op: (m, b) => put(m, b, 'v', 0, pattern('v', 0, 2)) },
  { name: 'write to a zero block', op: (m, b) => put(m, b, 'v', 10 * BS, pattern('v', 10, 2)) },
  { name: 'discard an owned block', op: (m) => m.discard('v', 1) },
  { name: 'discard a shared block', op: (m) => m.discard('v', 33) },
  { name: 'upgrade a v1 map (open)', setup: withLegacy, op: (m) => m.openVolume('leg') },
  { name: 'rollback to a snapshot', op: (m) => m.rollback('v', 's0') },
  { name: 'flatten a clone', setup: withClone, op: (m) => m.flatten('c') },
  {
    name: 'writes, a snapshot, writes',
    sequence: true,
    op: async (m, b, acked) => {
      await ackedPut(m, b, acked, 'v', 0, pattern('v', 0, 3));
      await ackedPut(m, b, acked, 'v', 10 * BS, pattern('v', 10, 3));
      await m.snapshot('v', 's1');
      await ackedPut(m, b, acked, 'v', 0, pattern('v', 0, 4));
      await ackedPut(m, b, acked, 'v', 33 * BS, pattern('v', 33, 4));
      await m.discard('v', 10);
      acked.push({ vol: 'v', offset: 10 * BS, data: Buffer.alloc(BS) });
    },
  },
  {
    name: 'upgrade a v1 map (write)',
    setup: withLegacy,
    op: (m, b) => put(m, b, 'leg', 4 * 1024 * 1024, pattern('leg', 1, 1)),
  },
];

/**
 * The next process: `info` of every map and the names the operation used (it settles what can be
 * settled), then opens every volume: what `vlmc` commands do first.
 */
async function repair(m: Mapper, names: Iterable<string>): Promise<void> {
  for (const name of names) await outcome(m.info(name));
  for (const v of await m.list()) if (!v.incomplete) await m.openVolume(v.name);
  await m.close();
}

/**
 * The next operations on every map succeed: write blocks of both map blocks of a volume (copy-ups)
 * and read them back, clone a snapshot; and every snapshot is still as it was after them.
 */
async function nextOperations(m: Mapper, b: Blocker, state: StoreState): Promise<void> {
  for (const [name, s] of Object.entries(state)) {
    if (isTrash(name)) continue;
    if (s.readonly) {
      await m.clone(name, `next-${name}`);
      expect(digest(await get(m, b, `next-${name}`, 0, s.size))).toBe(s.bytes);
    } else {
      for (const i of [1, 2, 33]) {
        if ((i + 1) * BS > s.size) continue;
        const data = pattern(name, i, 9);
        await put(m, b, name, i * BS, data);
        expect((await get(m, b, name, i * BS, BS)).equals(data)).toBe(true);
      }
    }
  }
  const after = await observe(m, b);
  for (const [name, s] of Object.entries(state)) {
    if (s.readonly) expect(after.state[name], `snapshot ${name} after writes to the volumes`).toEqual(s);
  }
  expect(await aliasing(m)).toEqual([]);
  await m.close();
}

const digest = (buf: Buffer) => createHash('sha256').update(buf).digest('hex').slice(0, 16);

/** Every name a state, a change list or a scenario mentions (the locks to look at). */
function namesOf(...states: StoreState[]): Set<string> {
  const names = new Set(['v', 's0', 's1', 'gone', 'n', 'c', 'w', 't', 'leg']);
  for (const s of states) for (const n of Object.keys(s)) if (!isTrash(n)) names.add(n);
  return names;
}

/** A state's key for a trash entry (`observe`). */
const isTrash = (key: string) => key.startsWith('trash:');

for (const kind of ['file', 'memory'] as const) {
  describe(`crash at every step (${kind} blocker)`, () => {
    let store: CrashStore;
    beforeAll(async () => {
      store = kind === 'file' ? await fileStore() : await memoryStore();
    });
    afterAll(async () => {
      await store.dispose();
    });

    for (const sc of scenarios) {
      it(sc.name, { timeout: 300_000 }, async () => {
        // The starting store.
        await store.clear();
        {
          const b = store.open();
          await (sc.setup ?? base)(mapperOver(b), b);
          await b.close();
        }
        await store.save();
        const before = await look(store);
        // The dry run: how many changes, and what "done" looks like.
        await store.restore();
        const dry = await runCrashing(store, null, (m, b) => sc.op(m, b, []));
        expect(dry.error).toBeNull();
        const done = await look(store);
        const n = dry.changes.length;
        expect(n).toBeGreaterThan(0);
        if (process.env.CRASH_VERBOSE)
          console.log(`${kind} ${sc.name}: ${n} changes: ${dry.changes.join(', ')}`);
        for (let k = 1; k <= n; k++) {
          for (const next of sc.sequence ? (['use'] as const) : (['use', 'retry'] as const)) {
            await store.restore();
            const acked: Acked[] = [];
            const run = await runCrashing(store, k, (m, b) => sc.op(m, b, acked));
            const at = `crash after change ${k}/${n} (${run.changes[k - 1]}), then ${next}`;
            const retry = next === 'retry' ? (m: Mapper, b: Blocker) => sc.op(m, b, []) : null;
            await afterCrash(store, at, retry, before.state, done.state, {
              acked,
              sequence: sc.sequence === true,
            });
          }
        }
      });
    }
  });
}

/**
 * The next process after a crash: uses every name (`retry` null) or runs the operation again,
 * then checks the invariants: with `retry`, the state must be "done"; else done or not done.
 */
async function afterCrash(
  store: CrashStore,
  at: string,
  retry: ((m: Mapper, b: Blocker) => Promise<unknown>) | null,
  before: StoreState,
  done: StoreState,
  run: { acked: Acked[]; sequence: boolean },
): Promise<void> {
  const b = store.open();
  try {
    if (retry) {
      const m = mapperOver(b);
      const result = await outcome(retry(m, b));
      expect(['ok', 'EEXIST_VOLUME', 'ENOENT_VOLUME'], `${at}: the retry failed`).toContain(result);
      await m.close();
    } else await repair(mapperOver(b), namesOf(before, done));
    const m = mapperOver(b);
    const after = await observe(m, b);
    expect(after.incomplete, `${at}: maps left incomplete`).toEqual([]);
    expect(await aliasing(m), `${at}: aliasing`).toEqual([]);
    const why = JSON.stringify({ after: after.state, before, done }, null, 1);
    if (run.sequence) {
      for (const [name, s] of Object.entries(after.state)) {
        expect(name in before || name in done, `${at}: ${name} appeared`).toBe(true);
        if (s.readonly)
          expect([before[name], done[name]], `${at}: snapshot ${name}:\n${why}`).toContainEqual(s);
      }
    } else {
      const matches = sameState(after.state, done)
        ? 'done'
        : sameState(after.state, before)
          ? 'not done'
          : null;
      expect(matches, `${at}: neither done nor not done:\n${why}`).not.toBeNull();
      if (retry) expect(matches, `${at}: the retry did not finish it:\n${why}`).toBe('done');
    }
    // Every write acknowledged before the crash reads back (the last one to each place counts).
    const last = new Map(run.acked.map((w) => [`${w.vol}@${w.offset}`, w]));
    for (const w of last.values()) {
      expect(
        (await get(m, b, w.vol, w.offset, w.data.length)).equals(w.data),
        `${at}: acknowledged write to ${w.vol} at ${w.offset}`,
      ).toBe(true);
    }
    await m.close();
    await nextOperations(mapperOver(b), b, after.state);
    expect(await leftLocks(store, namesOf(after.state)), `${at}: locks`).toEqual([]);
  } finally {
    await b.close();
  }
}

/** The store as a fresh mapper sees it (no repair: the state is settled or nothing happened). */
async function look(store: CrashStore) {
  const b = store.open();
  const m = mapperOver(b);
  try {
    return await observe(m, b);
  } finally {
    await m.close();
    await b.close();
  }
}

function sameState(a: StoreState, b: StoreState): boolean {
  return JSON.stringify(sortKeys(a)) === JSON.stringify(sortKeys(b));
}

function sortKeys(s: StoreState): StoreState {
  return Object.fromEntries(Object.entries(s).sort(([x], [y]) => (x < y ? -1 : 1)));
}
