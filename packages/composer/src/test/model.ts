/**
 * Model-based property test of the mapper and composer: random sequences of create, write,
 * write-zeroes, snapshot, clone, resize, rename and remove run against a real blocker stack and
 * against a plain in-memory model of volumes (one byte array each); after every step every live
 * volume is read back whole and compared byte for byte, and the volume list must match.
 *
 * Any blocker runs it with one call: `volumeModelTest({ name: 'file', stack })`.
 */
import type { Blocker } from '@archipelago/blocker';
import { Mapper } from '@archipelago/mapper';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Composer } from '../composer.js';
import {
  apply,
  BS,
  difference,
  type Model,
  NAMES,
  type Name,
  type Op,
  outcome,
  readStore,
  resolve,
} from './model-ops.js';

/** A fresh, empty pair of blockers (maps, data); `dispose` removes their storage. */
export interface Stack {
  blockerm: Blocker;
  blockerb: Blocker;
  dispose(): Promise<void>;
}

export interface VolumeModelOptions {
  name: string;
  stack: () => Promise<Stack>;
  /** fast-check runs (default 40). */
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
  { weight: 1, arbitrary: fc.record({ op: fc.constant('remove' as const), name: nameArb }) },
);

/** Every sequence starts from one volume so that most later ops have something to act on. */
const sequenceArb: fc.Arbitrary<Op[]> = fc
  .tuple(sizeArb, fc.array(opArb, { minLength: 15, maxLength: 40, size: 'max' }))
  .map(([size, ops]) => [{ op: 'create', name: 'va', size } as Op, ...ops]);

export function volumeModelTest(opts: VolumeModelOptions): void {
  describe(`volume model (${opts.name})`, () => {
    it('random create/write/zero/snapshot/clone/resize/rename/remove sequences match the model', async () => {
      await fc.assert(
        fc.asyncProperty(sequenceArb, async (ops) => {
          const stack = await opts.stack();
          const mapper = new Mapper({
            blockerm: stack.blockerm,
            blockerb: stack.blockerb,
            lockTimeoutMs: 2000,
          });
          const composer = new Composer({ mapper, blockerb: stack.blockerb });
          const model: Model = new Map();
          try {
            for (const [step, o] of ops.entries()) {
              const cmd = resolve(model, o);
              const want = apply(model, cmd);
              expect(await outcome(composer, cmd), `step ${step} ${JSON.stringify(cmd)}`).toBe(want);
              const differs = difference(await readStore(composer), model);
              if (differs) expect.fail(`after step ${step} ${JSON.stringify(cmd)}: ${differs}`);
            }
          } finally {
            await mapper.close();
            await stack.dispose();
          }
        }),
        { numRuns: opts.runs ?? 40, ...(opts.seed === undefined ? {} : { seed: opts.seed }) },
      );
    });
  });
}
