/**
 * Crash points of flatten (ops/flatten.ts): stopped at every blocker call, by a kill after each of
 * its store changes (the harness of crash.test.ts) or by the failure of each of its calls of any
 * kind, the clone reads the same bytes throughout, its parent snapshot and every other map are
 * unchanged, no map is left incomplete, and a gc then frees nothing a live map or a trash entry
 * names; flattening again finishes it (the clone names only its own objects and zero blocks).
 */
import type { Blocker } from '@archipelago/blocker';
import { ObjFlag } from '@archipelago/mapfile';
import { describe, expect, it } from 'vitest';
import { mapperOver, observe } from './__fixtures__/crash.js';
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
import { isOwnObject } from './ops/flatten.js';

const BS = 4096;

/**
 * `v`: 40 blocks (two map blocks) with data in three, snapshot `s0`; `c`, a clone of `s0` grown
 * to 45 blocks, with one block of its own and one partly written (copied up); `gone`, a removed
 * clone of `s0` (a trash entry naming the parent's objects too).
 */
async function setup(m: Mapper, b: Blocker): Promise<void> {
  await originWithSnapshot(m, b);
  await put(m, b, 'v', 0, Buffer.alloc(BS, 40)); // the origin moves on
  await m.clone('s0', 'c', { size: 45 * BS });
  await put(m, b, 'c', 2 * BS, Buffer.alloc(BS, 60));
  await put(m, b, 'c', 33 * BS + 100, Buffer.alloc(10, 61));
  await m.clone('s0', 'gone');
  await m.remove('gone');
  await m.close();
}

const op = (m: Mapper) => m.flatten('c');

const t = useLifeCrashStore(setup, op);

/** The parent's objects the clone still names (a flatten copies them up). */
async function sharedOf(m: Mapper, clone: string): Promise<string[]> {
  return (await m.entries(clone))
    .filter((e) => !(e.flags & ObjFlag.ZERO) && !isOwnObject(clone, e.name))
    .map((e) => e.name);
}

/** After the next use and a gc: the same bytes everywhere; then flattening again finishes it. */
async function check(at: string, gcFirst = false): Promise<void> {
  const { store, before, done } = t.life;
  const r = await reopenAndCollect(store, LIFE_NAMES, { gcFirst });
  expect(r.incomplete, `${at}: maps left incomplete`).toEqual([]);
  const why = JSON.stringify({ after: r.state, before }, null, 1);
  // Every map reads as before (a flatten changes no bytes) and the snapshot's entries are its own.
  expect(r.state, `${at}: a map changed:\n${why}`).toEqual(before);
  expect(r.afterGc, `${at}: gc changed what the maps read`).toEqual(r.state);
  expect(r.missing, `${at}: gc freed objects that maps name`).toEqual([]);
  const b = store.open();
  try {
    const m = mapperOver(b);
    await m.flatten('c');
    expect(await sharedOf(m, 'c'), `${at}: flattening again left shared blocks`).toEqual([]);
    await m.close();
    const after = mapperOver(b);
    expect((await observe(after, b)).state, `${at}: flattening again changed bytes`).toEqual(done);
    await after.close();
  } finally {
    await b.close();
  }
}

describe('flatten crash points', () => {
  it('the starting store: c shares blocks with s0; flattened, it shares none and reads the same', async () => {
    const { store, before, done } = t.life;
    const b = store.open();
    const m = mapperOver(b);
    await store.restore();
    expect((await sharedOf(m, 'c')).length).toBe(2); // blocks 0 and 1 (33 and 2 are its own)
    await m.close();
    await b.close();
    expect(done).toEqual(before);
  });

  it('killed after each of its store changes', { timeout: 120_000 }, () =>
    eachKill(t.life, op, (at) => check(at)),
  );

  it('killed after each of its store changes, a gc before the next use', { timeout: 120_000 }, () =>
    eachKill(t.life, op, (at) => check(`${at}, gc first`, true)),
  );

  it('each of its blocker calls failing', { timeout: 120_000 }, () =>
    eachFailure(t.life, op, (at) => check(at)),
  );
});
