/**
 * Crash points of rollback (ops/rollback.ts): stopped at every blocker call, by a kill after each
 * of its store changes (the harness of crash.test.ts) or by the failure of each of its calls of
 * any kind, the next process finds the volume wholly as it was or wholly rolled back, the
 * snapshot and every other map unchanged, no map left incomplete; and a gc then frees nothing a
 * live map or a trash entry names.
 */
import type { Blocker } from '@archipelago/blocker';
import { describe, expect, it } from 'vitest';
import {
  eachFailure,
  eachKill,
  LIFE_NAMES,
  originWithSnapshot,
  reopenAndCollect,
  useLifeCrashStore,
} from './__fixtures__/fail-at.js';
import { put } from './__fixtures__/stack.js';
import type { Mapper } from './mapper.js';

const BS = 4096;

/**
 * `v`: 40 blocks (two map blocks) with data in both, snapshot `s0`, then writes (copy-ups, a
 * zero block filled), and a resize to 70 blocks (a third map block, with data): rolling back
 * shrinks it. `c`, a clone of `s0` with a block of its own; `gone`, a removed volume (a trash
 * entry, whose objects gc must keep).
 */
async function setup(m: Mapper, b: Blocker): Promise<void> {
  await originWithSnapshot(m, b);
  await put(m, b, 'v', 1 * BS, Buffer.alloc(BS, 50));
  await put(m, b, 'v', 5 * BS, Buffer.alloc(BS, 51));
  await m.resize('v', 70 * BS);
  await put(m, b, 'v', 65 * BS, Buffer.alloc(BS, 52));
  await m.clone('s0', 'c');
  await put(m, b, 'c', 2 * BS, Buffer.alloc(BS, 60));
  await m.create('gone', { size: 4 * BS, blocksize: BS });
  await put(m, b, 'gone', 0, Buffer.alloc(BS, 70));
  await m.remove('gone');
  await m.close();
}

const op = (m: Mapper) => m.rollback('v', 's0');

const t = useLifeCrashStore(setup, op);

/** The next process's view: done or not done as a whole; gc then changes nothing and frees nothing named. */
async function check(at: string, gcFirst = false): Promise<void> {
  const { store, before, done } = t.life;
  const r = await reopenAndCollect(store, LIFE_NAMES, { gcFirst });
  if (process.env.CRASH_VERBOSE) console.log(`${at}: gc freed ${r.gc.freedObjects}`);
  expect(r.incomplete, `${at}: maps left incomplete`).toEqual([]);
  const why = JSON.stringify({ after: r.state, before, done }, null, 1);
  expect([before, done], `${at}: neither the old contents nor the snapshot's:\n${why}`).toContainEqual(
    r.state,
  );
  expect(r.state.s0, `${at}: the snapshot changed`).toEqual(before.s0);
  expect(r.afterGc, `${at}: gc changed what the maps read`).toEqual(r.state);
  expect(r.missing, `${at}: gc freed objects that maps name`).toEqual([]);
}

describe('rollback crash points', () => {
  it('the starting store: the rollback changes v, shrinks it, and keeps s0', () => {
    const { before, done } = t.life;
    expect(done.v!.bytes).toBe(before.s0!.bytes);
    expect(done.v!.size).toBe(40 * BS);
    expect(before.v!.bytes).not.toBe(before.s0!.bytes);
    expect(done.s0).toEqual(before.s0);
  });

  it('killed after each of its store changes', { timeout: 120_000 }, () =>
    eachKill(t.life, op, (at) => check(at)),
  );

  // A gc between a committed rollback and the volume's next use: the staged map
  // (`<vol>_fffffffffffffffe`, no head of its own) is a root through the volume's `rolling-back`
  // intent (gc.ts readMap). Before that fix (f03615d..e1f9d16) this failed: the staged map's
  // blocks were swept in a shared store and the volume stayed INCOMPLETE.
  it('killed after each of its store changes, a gc before the next use', { timeout: 120_000 }, () =>
    eachKill(t.life, op, (at) => check(`${at}, gc first`, true)),
  );

  it('each of its blocker calls failing', { timeout: 120_000 }, () =>
    eachFailure(t.life, op, (at) => check(at)),
  );
});
