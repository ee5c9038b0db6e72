/**
 * Model-based property test of the mapper and composer: random sequences of create, write,
 * write-zeroes, snapshot, clone, resize, rename and remove, and of the life-cycle steps (restore
 * from the trash, gc with and without the trash purge, rollback, flatten: model-life.ts), run
 * against a real blocker stack and against a plain in-memory model of volumes (one byte array
 * each, with the trash and the lineage); after every step every live volume is read back whole
 * and compared byte for byte, the volume list and the trash must match, and after a gc every
 * object a live map or trash entry names must still be in blockerb.
 *
 * Any blocker runs it with one call: `volumeModelTest({ name: 'file', stack })`.
 */
import type { Blocker } from '@archipelago/blocker';
import { ArchipelagoError } from '@archipelago/libxseg';
import { Mapper } from '@archipelago/mapper';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Composer } from '../composer.js';
import { type AnyCmd, type LifeCmd, LifeModel, missingObjects, runLife } from './model-life.js';
import { BS, difference, NAMES, type Name, type Op, readStore, resolve } from './model-ops.js';

/** A fresh, empty pair of blockers (maps, data); `dispose` removes their storage. */
export interface Stack {
  blockerm: Blocker;
  blockerb: Blocker;
  dispose(): Promise<void>;
}

export interface VolumeModelOptions {
  name: string;
  stack: () => Promise<Stack>;
  /** fast-check runs (default 30: each sequence runs the life-cycle steps too). */
  runs?: number;
  /** Pin a seed to replay a failure. */
  seed?: number;
}

const nameArb = fc.constantFrom(...NAMES);
/** Snapshot and clone draw their roles mostly from the matching pool, so they often succeed. */
const volArb = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom<Name>('va', 'vb', 'vc') },
  { weight: 1, arbitrary: nameArb },
);
const snapArb = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom<Name>('sa', 'sb') },
  { weight: 1, arbitrary: nameArb },
);
export const sizeArb = fc.integer({ min: 1, max: 6 * BS + 100 });
/** Ranges relative to the volume's size (model-ops.ts, `resolve`). */
const rangeArb = {
  at: fc.integer({ min: 0, max: 999 }),
  span: fc.integer({ min: 1, max: 1000 }),
  past: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
};

export const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ op: fc.constant('create' as const), name: nameArb, size: sizeArb }) },
  {
    weight: 8,
    arbitrary: fc.record({
      op: fc.constant('write' as const),
      name: nameArb,
      ...rangeArb,
      byte: fc.integer({ min: 1, max: 255 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('zero' as const),
      name: nameArb,
      ...rangeArb,
      noHole: fc.boolean(),
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('snapshot' as const), name: volArb, snap: snapArb }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('clone' as const),
      snap: snapArb,
      name: volArb,
      grow: fc.integer({ min: 0, max: 2 * BS }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('resize' as const), name: nameArb, size: sizeArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('rename' as const), name: nameArb, to: nameArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('remove' as const), name: nameArb }) },
);

/** The life-cycle steps (model-life.ts), drawn among the ops above (not by the concurrent test). */
/** A restore as drawn: the `pick`-th latest name in the trash, or (past them) one of NAMES. */
type RestoreOp = { op: 'restore'; pick: number };
type LifeOp = Exclude<LifeCmd, { op: 'restore' }> | RestoreOp;

function restoreOf(model: LifeModel, pick: number): LifeCmd {
  const t = model.trash;
  return { op: 'restore', name: t[t.length - 1 - pick]?.name ?? NAMES[pick % NAMES.length]! };
}

const lifeArb: fc.Arbitrary<Op | LifeOp> = fc.oneof(
  { weight: 19, arbitrary: opArb },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('remove' as const), name: nameArb }) },
  // Mostly one of the latest removed names (`restoreOf`), so restores often succeed.
  { weight: 2, arbitrary: fc.record({ op: fc.constant('restore' as const), pick: fc.nat(6) }) },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant('gc' as const), purge: fc.nat(2).map((n) => n === 0) }),
  },
  {
    weight: 3,
    arbitrary: fc.record({ op: fc.constant('rollback' as const), name: volArb, snap: snapArb }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('flatten' as const), name: volArb }) },
);

/**
 * Every sequence starts from a volume with data, a snapshot of it and a clone of that, so that
 * most later ops have something to act on (and rollbacks and flattens a lineage).
 */
const sequenceArb: fc.Arbitrary<Array<Op | LifeOp>> = fc
  .tuple(
    sizeArb,
    fc.integer({ min: 1, max: 255 }),
    fc.integer({ min: 0, max: 2 * BS }),
    fc.array(lifeArb, { minLength: 15, maxLength: 40, size: 'max' }),
  )
  .map(([size, byte, grow, ops]) => [
    { op: 'create', name: 'va', size } as Op,
    { op: 'write', name: 'va', at: 0, span: 1000, past: false, byte } as Op,
    { op: 'snapshot', name: 'va', snap: 'sa' } as Op,
    { op: 'clone', snap: 'sa', name: 'vb', grow } as Op,
    ...ops,
  ]);

const isLife = (o: Op | LifeOp): o is LifeOp =>
  o.op === 'restore' || o.op === 'gc' || o.op === 'rollback' || o.op === 'flatten';

/** The ArchipelagoError code `p` fails with, or null. */
async function codeOf(p: Promise<unknown>): Promise<string | null> {
  try {
    await p;
    return null;
  } catch (e) {
    if (!ArchipelagoError.isInstance(e)) throw e;
    return e.code;
  }
}

export function volumeModelTest(opts: VolumeModelOptions): void {
  describe(`volume model (${opts.name})`, () => {
    it('random create/write/zero/snapshot/clone/resize/rename/remove/restore/gc/rollback/flatten sequences match the model', async () => {
      await fc.assert(
        fc.asyncProperty(sequenceArb, async (ops) => {
          const stack = await opts.stack();
          const mapper = new Mapper({
            blockerm: stack.blockerm,
            blockerb: stack.blockerb,
            lockTimeoutMs: 2000,
          });
          const composer = new Composer({ mapper, blockerb: stack.blockerb });
          const real = { composer, mapper, blockerm: stack.blockerm, blockerb: stack.blockerb };
          const model = new LifeModel();
          try {
            for (const [step, o] of ops.entries()) {
              const cmd: AnyCmd = !isLife(o)
                ? resolve(model.vols, o)
                : o.op === 'restore'
                  ? restoreOf(model, o.pick)
                  : o;
              const at = `step ${step} ${JSON.stringify(cmd)}`;
              const want = model.apply(cmd);
              expect(await codeOf(runLife(real, cmd)), at).toBe(want);
              const differs = difference(await readStore(composer), model.vols);
              if (differs) expect.fail(`after ${at}: ${differs}`);
              if (cmd.op === 'gc' || cmd.op === 'remove' || cmd.op === 'restore' || step === ops.length - 1) {
                const { missing, trash } = await missingObjects(
                  real,
                  cmd.op === 'gc' || step === ops.length - 1,
                );
                expect(missing, `after ${at}: objects freed while named`).toEqual([]);
                expect(trash, `after ${at}: the trash`).toEqual(model.trash.map((t) => t.name));
              }
            }
          } finally {
            await mapper.close();
            await stack.dispose();
          }
        }),
        { numRuns: opts.runs ?? 30, ...(opts.seed === undefined ? {} : { seed: opts.seed }) },
      );
    });
  });
}
