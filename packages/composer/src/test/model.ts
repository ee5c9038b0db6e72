/**
 * Model-based property test of the mapper and composer: random sequences of create, write,
 * write-zeroes, snapshot, clone, resize, rename and remove run against a real blocker stack and
 * against a plain in-memory model of volumes (one byte array each); after every step every live
 * volume is read back whole and compared byte for byte, and the volume list must match.
 *
 * Any blocker runs it with one call: `volumeModelTest({ name: 'file', stack })`.
 */
import type { Blocker } from '@archipelago/blocker';
import { ArchipelagoError } from '@archipelago/libxseg';
import { Mapper } from '@archipelago/mapper';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Composer } from '../composer.js';

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

const BS = 1024; // small blocks: many objects per volume, fast runs
const NAMES = ['va', 'vb', 'vc', 'sa', 'sb'] as const;
type Name = (typeof NAMES)[number];

type Op =
  | { op: 'create'; name: Name; size: number }
  | { op: 'write'; name: Name; at: number; span: number; past: boolean; byte: number }
  | { op: 'zero'; name: Name; at: number; span: number; past: boolean; noHole: boolean }
  | { op: 'snapshot'; name: Name; snap: Name }
  | { op: 'clone'; snap: Name; name: Name; grow: number }
  | { op: 'resize'; name: Name; size: number }
  | { op: 'rename'; name: Name; to: Name }
  | { op: 'remove'; name: Name };

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
const sizeArb = fc.integer({ min: 1, max: 6 * BS + 100 });
/**
 * Ranges are drawn relative to the volume's size when the op runs (so most I/O lands inside
 * the volume and hits shared blocks), with an explicit small chance of reaching past the end.
 */
const rangeArb = {
  at: fc.integer({ min: 0, max: 999 }),
  span: fc.integer({ min: 1, max: 1000 }),
  past: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
};

/** The concrete [offset, offset+length) of a write/zero op against a volume of `size` bytes. */
function rangeOf(
  o: { at: number; span: number; past: boolean },
  size: number,
): { offset: number; length: number } {
  const offset = Math.floor((o.at / 1000) * size);
  if (o.past) return { offset, length: size - offset + 1 };
  const room = size - offset;
  return { offset, length: Math.max(1, Math.min(room, Math.ceil((o.span / 1000) * Math.min(room, 3 * BS)))) };
}

const opArb: fc.Arbitrary<Op> = fc.oneof(
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

interface ModelVolume {
  bytes: Uint8Array;
  readonly: boolean;
}

/** What the model says an op does: the new state, or the error code the real system must give. */
function apply(model: Map<string, ModelVolume>, o: Op): string | null {
  const v = 'name' in o ? model.get(o.name) : undefined;
  switch (o.op) {
    case 'create':
      if (v) return 'EEXIST_VOLUME';
      model.set(o.name, { bytes: new Uint8Array(o.size), readonly: false });
      return null;
    case 'write':
    case 'zero': {
      if (!v) return 'ENOENT_VOLUME';
      if (v.readonly) return 'EREADONLY';
      const { offset, length } = rangeOf(o, v.bytes.length);
      if (offset + length > v.bytes.length) return 'ERANGE';
      v.bytes.fill(o.op === 'write' ? o.byte : 0, offset, offset + length);
      return null;
    }
    case 'snapshot': {
      if (!v) return 'ENOENT_VOLUME';
      if (v.readonly) return 'EREADONLY';
      if (o.snap === o.name || model.has(o.snap)) return 'EEXIST_VOLUME';
      model.set(o.snap, { bytes: v.bytes.slice(), readonly: true });
      return null;
    }
    case 'clone': {
      const s = model.get(o.snap);
      if (!s) return 'ENOENT_VOLUME';
      if (!s.readonly) return 'ENOTSNAPSHOT';
      if (model.has(o.name)) return 'EEXIST_VOLUME';
      const bytes = new Uint8Array(s.bytes.length + o.grow);
      bytes.set(s.bytes);
      model.set(o.name, { bytes, readonly: false });
      return null;
    }
    case 'resize': {
      if (!v) return 'ENOENT_VOLUME';
      if (v.readonly) return 'EREADONLY';
      const bytes = new Uint8Array(o.size);
      bytes.set(v.bytes.subarray(0, Math.min(o.size, v.bytes.length)));
      v.bytes = bytes;
      return null;
    }
    case 'rename': {
      if (!v) return 'ENOENT_VOLUME';
      if (model.has(o.to)) return 'EEXIST_VOLUME';
      model.delete(o.name);
      model.set(o.to, v);
      return null;
    }
    case 'remove':
      if (!v) return 'ENOENT_VOLUME';
      model.delete(o.name);
      return null;
  }
}

/** Runs an op on the real stack; `size` is the target volume's size before the op (0 if none). */
async function run(c: Composer, o: Op, size: number): Promise<void> {
  const m = c.mapper;
  switch (o.op) {
    case 'create':
      await m.create(o.name, { size: o.size, blocksize: BS });
      return;
    case 'write': {
      const { offset, length } = rangeOf(o, size);
      await c.write(o.name, offset, Buffer.alloc(Math.max(length, 1), o.byte));
      return;
    }
    case 'zero': {
      const { offset, length } = rangeOf(o, size);
      await c.writeZeroes(o.name, offset, Math.max(length, 1), { noHole: o.noHole });
      return;
    }
    case 'snapshot':
      await c.snapshot(o.name, o.snap);
      return;
    case 'clone': {
      const src = await m.info(o.snap);
      await m.clone(o.snap, o.name, { size: src.size + o.grow });
      return;
    }
    case 'resize':
      await m.resize(o.name, o.size);
      return;
    case 'rename':
      await m.rename(o.name, o.to);
      return;
    case 'remove':
      await c.remove(o.name);
      return;
  }
}

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
          const model = new Map<string, ModelVolume>();
          try {
            for (const [step, o] of ops.entries()) {
              const size = model.get(o.name)?.bytes.length ?? 0;
              const want = apply(model, o);
              let got: string | null = null;
              try {
                await run(composer, o, size);
              } catch (e) {
                if (!ArchipelagoError.isInstance(e)) throw e;
                got = e.code;
              }
              expect(got, `step ${step} ${JSON.stringify(o)}`).toBe(want);
              const listed = (await mapper.list()).map((i) => i.name);
              expect(listed, `volume list after step ${step}`).toEqual([...model.keys()].sort());
              for (const [name, v] of model) {
                const real = await composer.read(name, 0, v.bytes.length);
                if (!real.equals(v.bytes)) {
                  const at = real.findIndex((b, i) => b !== v.bytes[i]);
                  expect.fail(`after step ${step} ${JSON.stringify(o)}: "${name}" differs at byte ${at}`);
                }
              }
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
