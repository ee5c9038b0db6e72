/**
 * The blocker conformance suite: every Blocker implementation runs it with one line,
 *
 *   blockerConformance({ name: 'file', factory: async (o) => new FileBlocker({ dir, ...o }) });
 *
 * It checks the contract as a user sees it (contract.ts), through the public methods only. The
 * tests share one store, so each test works on names under its own fresh prefix; a second factory
 * call with another identity must reach the same store (that is how lock contention is tested).
 */
import { createHash, randomBytes } from 'node:crypto';
import { ArchipelagoError, type ErrorCode } from '@archipelago/libxseg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { type Blocker, LOCK_SUFFIX } from '../contract.js';
import { currentProcess, type LockProcess, processStart } from '../holder.js';
import {
  closedError,
  countError,
  dataError,
  lengthError,
  lockedError,
  lockTimeoutError,
  MAX_READ,
  missingObjectError,
  missingSourceError,
  type NameRole,
  nameError,
  notLockedError,
  notOwnerError,
  prefixError,
  targetError,
  timeoutError,
} from '../rules.js';

export interface ConformanceOptions {
  /** Shown in the describe() title, e.g. "file". */
  name: string;
  /**
   * Opens a blocker on the shared test store. Called several times per test; a call with another
   * `identity` must share the same storage (objects and locks) with the others.
   */
  factory: (opts?: { identity?: string }) => Promise<Blocker>;
  /** Runs once after the suite (e.g. removes the temp directory). */
  cleanup?: () => Promise<void>;
  /** What the implementation supports; everything defaults to true. */
  supports?: {
    /** `acquire({ wait: true })` blocks until the lock is free or times out. */
    blockingAcquire?: boolean;
  };
}

/** Identities used for lock contention: the `<hostname>_<instance>` shape of the original. */
export const IDENTITY_A = 'conformance-a_1';
export const IDENTITY_B = 'conformance-b_2';

/** Expects `p` to reject with an ArchipelagoError of `code`; resolves that error. */
export async function expectCode(p: Promise<unknown>, code: ErrorCode): Promise<ArchipelagoError> {
  let settled: { ok: true; value: unknown } | { ok: false; error: unknown };
  try {
    settled = { ok: true, value: await p };
  } catch (error) {
    settled = { ok: false, error };
  }
  if (settled.ok) throw new Error(`expected a rejection with ${code}, but the call resolved`);
  const e = settled.error;
  if (!ArchipelagoError.isInstance(e)) {
    throw new Error(`expected an ArchipelagoError ${code}, got ${String(e)}`, { cause: e });
  }
  expect(e.code, e.message).toBe(code);
  return e;
}

/**
 * Expects `call()` to return a promise (never to throw) that rejects with an error like `want`:
 * the same code (or, for a TypeError, the same class) and the same message. Resolves the error.
 */
export async function expectRefusal(
  what: string,
  call: () => Promise<unknown>,
  want: Error,
): Promise<ArchipelagoError> {
  let p: Promise<unknown> | undefined;
  expect(() => {
    p = call();
  }, `${what} threw synchronously`).not.toThrow();
  const got = await (p as Promise<unknown>).then(
    () => new Error(`${what}: expected a rejection (${want.message}), but the call resolved`),
    (e: unknown) => e,
  );
  if (ArchipelagoError.isInstance(want)) {
    if (!ArchipelagoError.isInstance(got)) {
      throw new Error(`${what}: expected an ArchipelagoError ${want.code}, got ${String(got)}`, {
        cause: got,
      });
    }
    expect(got.code, `${what}: ${got.message}`).toBe(want.code);
  } else {
    expect(got, what).toBeInstanceOf(want.constructor);
  }
  expect((got as Error).message, what).toBe(want.message);
  return got as ArchipelagoError;
}

/** Collects an async iterable. */
export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** Deterministic pseudo-random bytes (xorshift32), so failures replay. */
export function patternBytes(length: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

/** `b` without its trailing zero bytes. */
function stripZeros(b: Buffer): Buffer {
  let end = b.length;
  while (end > 0 && b[end - 1] === 0) end--;
  return b.subarray(0, end);
}

/** Resolves with 'pending' if `p` has not settled within `ms`, else with how it settled. */
async function stateAfter(p: Promise<unknown>, ms: number): Promise<'pending' | 'resolved' | 'rejected'> {
  let state: 'pending' | 'resolved' | 'rejected' = 'pending';
  p.then(
    () => {
      state = 'resolved';
    },
    () => {
      state = 'rejected';
    },
  );
  await new Promise((r) => setTimeout(r, ms));
  return state;
}

/** Names that could escape a store or break its naming; every method must refuse them. */
export const BAD_NAMES: readonly string[] = [
  '',
  '.',
  '..',
  '../x',
  '../../etc/passwd',
  'a/b',
  '/abs',
  'a\\b',
  'x\0y',
  'sp ace',
  'new\nline',
  'tilde~',
  'ünïcode',
  'x'.repeat(124),
  'y'.repeat(300),
];

/** Names of the wrong type: refused with EINVAL_NAME as well. */
export const NON_STRING_NAMES: readonly unknown[] = [undefined, null, 42, {}, ['a']];

/** Offsets, lengths and sizes out of range or of the wrong type: EINVAL. */
export const BAD_COUNTS: readonly unknown[] = [
  -1,
  0.5,
  2 ** 53,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  '1',
  null,
];

/** Data that is no Uint8Array: a TypeError. */
const NOT_BYTES: readonly unknown[] = [
  'abc',
  [1, 2, 3],
  null,
  undefined,
  42,
  new ArrayBuffer(4),
  new DataView(new ArrayBuffer(4)),
];

type Call = [label: string, role: NameRole, call: () => Promise<unknown>];

/**
 * Every call of the contract that takes a name, on `name` in the role shown (copies use `other`
 * as the other object), with valid other arguments. The optional calls where `b` has them.
 */
function callsOn(b: Blocker, name: string, other: string): Call[] {
  const calls: Call[] = [
    ['read', 'object name', () => b.read(name, 0, 1)],
    ['read missingOk', 'object name', () => b.read(name, 0, 1, { missingOk: true })],
    ['write', 'object name', () => b.write(name, 0, Buffer.from('evil'))],
    ['writeFull', 'object name', () => b.writeFull(name, Buffer.from('evil'))],
    ['copy to', 'destination object name', () => b.copy(other, name)],
    ['copy from', 'source object name', () => b.copy(name, `${other}2`)],
    ['copy from missingOk', 'source object name', () => b.copy(name, `${other}3`, { missingOk: true })],
    ['delete', 'object name', () => b.delete(name)],
    ['info', 'object name', () => b.info(name)],
    ['exists', 'object name', () => b.exists(name)],
    ['acquire', 'lock name', () => b.acquire(name)],
    ['acquire wait', 'lock name', () => b.acquire(name, { wait: true, timeoutMs: 100 })],
    ['release', 'lock name', () => b.release(name, { force: true })],
    ['lockOwner', 'lock name', () => b.lockOwner(name)],
  ];
  const { readInto, hash } = b;
  if (readInto) calls.push(['readInto', 'object name', () => readInto.call(b, name, 0, Buffer.alloc(1))]);
  if (hash) calls.push(['hash', 'object name', () => hash.call(b, name, 10)]);
  return calls;
}

export function blockerConformance(opts: ConformanceOptions): void {
  const { factory } = opts;
  const blockingAcquire = opts.supports?.blockingAcquire ?? true;

  describe(`blocker conformance: ${opts.name}`, () => {
    const opened: Blocker[] = [];
    let counter = 0;
    const run = randomBytes(3).toString('hex');

    /** A fresh name prefix per test, so tests on the shared store never see each other. */
    const prefix = () => `c${run}-${++counter}-`;

    async function open(identity?: string): Promise<Blocker> {
      const b = await factory(identity === undefined ? undefined : { identity });
      opened.push(b);
      return b;
    }

    /** Blockers of identities A and B, and a fresh lock that A holds. */
    async function heldByA(): Promise<{ a: Blocker; b: Blocker; name: string }> {
      const a = await open(IDENTITY_A);
      const b = await open(IDENTITY_B);
      const name = `${prefix()}vol`;
      await a.acquire(name);
      return { a, b, name };
    }

    afterEach(async () => {
      const all = opened.splice(0);
      await Promise.all(all.map((b) => b.close().catch(() => {})));
    });

    afterAll(async () => {
      await opts.cleanup?.();
    });

    describe('identity', () => {
      it('declares specification v1, a kind and an identity', async () => {
        const b = await open();
        expect(b.specificationVersion).toBe('v1');
        expect(typeof b.kind).toBe('string');
        expect(b.kind.length).toBeGreaterThan(0);
        expect(typeof b.identity).toBe('string');
        expect(b.identity.length).toBeGreaterThan(0);
      });

      it('uses the identity the factory was given', async () => {
        const a = await open(IDENTITY_A);
        const b = await open(IDENTITY_B);
        expect(a.identity).toBe(IDENTITY_A);
        expect(b.identity).toBe(IDENTITY_B);
      });
    });

    describe('write and read', () => {
      const sizes = [1, 511, 512, 513, 4095, 4096, 4097, 65_536 + 3, (1 << 20) + 1, (4 << 20) - 7];
      for (const size of sizes) {
        it(`reads back ${size} bytes written at offset 0`, async () => {
          const b = await open();
          const name = `${prefix()}obj`;
          const data = patternBytes(size, size);
          await b.write(name, 0, data);
          const back = await b.read(name, 0, size);
          expect(Buffer.isBuffer(back)).toBe(true);
          expect(back.length).toBe(size);
          expect(back.equals(data)).toBe(true);
          expect(await b.info(name)).toMatchObject({ size });
        });
      }

      for (const offset of [1, 511, 4096, 4096 * 3 + 7, (4 << 20) - 100]) {
        it(`reads back bytes written at offset ${offset}, with zeros before them`, async () => {
          const b = await open();
          const name = `${prefix()}obj`;
          const data = patternBytes(5000, offset);
          await b.write(name, offset, data);
          expect((await b.read(name, offset, data.length)).equals(data)).toBe(true);
          expect((await b.read(name, 0, offset)).equals(Buffer.alloc(offset))).toBe(true);
          expect(await b.info(name)).toMatchObject({ size: offset + data.length });
        });
      }

      it('reads any sub-range of what was written', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        const data = patternBytes(3 * 4096 + 17, 7);
        await b.write(name, 0, data);
        for (const [o, l] of [
          [0, 1],
          [1, 4096],
          [4095, 2],
          [4096, 4096],
          [5000, 3000],
          [data.length - 1, 1],
        ] as const) {
          expect((await b.read(name, o, l)).equals(data.subarray(o, o + l)), `read(${o}, ${l})`).toBe(true);
        }
      });

      it('overwrites part of an object and keeps the rest', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        const base = patternBytes(8192, 1);
        const patch = patternBytes(100, 2);
        await b.write(name, 0, base);
        await b.write(name, 1000, patch);
        const expected = Buffer.from(base);
        patch.copy(expected, 1000);
        expect((await b.read(name, 0, 8192)).equals(expected)).toBe(true);
        expect(await b.info(name)).toMatchObject({ size: 8192 });
      });

      it('extends an object by writing past its end (the gap reads as zeros)', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        await b.write(name, 0, Buffer.from('head'));
        await b.write(name, 10_000, Buffer.from('tail'));
        expect(await b.info(name)).toMatchObject({ size: 10_004 });
        const all = await b.read(name, 0, 10_004);
        expect(all.subarray(0, 4).toString()).toBe('head');
        expect(all.subarray(4, 10_000).equals(Buffer.alloc(9996))).toBe(true);
        expect(all.subarray(10_000).toString()).toBe('tail');
      });

      it('zero-fills a read past the end and returns the full length', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        const data = patternBytes(100, 3);
        await b.write(name, 0, data);
        const straddle = await b.read(name, 50, 100);
        expect(straddle.length).toBe(100);
        expect(straddle.subarray(0, 50).equals(data.subarray(50))).toBe(true);
        expect(straddle.subarray(50).equals(Buffer.alloc(50))).toBe(true);
        const beyond = await b.read(name, 1 << 20, 4096);
        expect(beyond.length).toBe(4096);
        expect(beyond.equals(Buffer.alloc(4096))).toBe(true);
        expect(await b.info(name)).toMatchObject({ size: 100 });
      });

      it('returns an empty buffer for a zero-length read of an existing object', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        await b.write(name, 0, Buffer.from('x'));
        expect((await b.read(name, 0, 0)).length).toBe(0);
      });

      it('fails a read of a missing object with ENOENT_OBJECT', async () => {
        const b = await open();
        const name = `${prefix()}missing`;
        const e = await expectRefusal('read', () => b.read(name, 0, 10), missingObjectError(name));
        expect(e.details).toEqual({ name });
      });

      it('reads a missing object as zeros with missingOk, without creating it', async () => {
        const b = await open();
        const name = `${prefix()}missing`;
        const z = await b.read(name, 4096, 8192, { missingOk: true });
        expect(z.length).toBe(8192);
        expect(z.equals(Buffer.alloc(8192))).toBe(true);
        expect(await b.exists(name)).toBe(false);
      });

      it('readInto, where offered, fills the caller’s buffer like read with missingOk', async () => {
        const b = await open();
        if (!b.readInto) return;
        const name = `${prefix()}into`;
        await b.write(name, 0, Buffer.from('abcdef'));
        const target = Buffer.alloc(8, 0xff);
        await b.readInto(name, 2, target);
        expect(target.equals(Buffer.from([0x63, 0x64, 0x65, 0x66, 0, 0, 0, 0]))).toBe(true);
        target.fill(0xff);
        await b.readInto(`${prefix()}missing`, 0, target);
        expect(target.equals(Buffer.alloc(8))).toBe(true);
        expect(await b.exists(`${prefix()}missing`)).toBe(false);
      });

      it('accepts a plain Uint8Array, and a view into a larger buffer', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        await b.write(name, 0, new Uint8Array([1, 2, 3]));
        const big = patternBytes(1000, 9);
        await b.write(name, 3, big.subarray(100, 200));
        const back = await b.read(name, 0, 103);
        expect([...back.subarray(0, 3)]).toEqual([1, 2, 3]);
        expect(back.subarray(3).equals(big.subarray(100, 200))).toBe(true);
      });

      it('creates an object with an empty write', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        await b.write(name, 0, new Uint8Array(0));
        expect(await b.exists(name)).toBe(true);
        expect(await b.info(name)).toMatchObject({ size: 0 });
      });

      it('does not keep a reference to the caller’s buffer', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        const data = Buffer.from('original');
        await b.write(name, 0, data);
        data.fill(0);
        expect((await b.read(name, 0, 8)).toString()).toBe('original');
      });

      it('agrees with an in-memory model over a random sequence of writes and reads', async () => {
        const b = await open();
        const p = prefix();
        const names = [`${p}m0`, `${p}m1`, `${p}m2`];
        const model = new Map<string, Buffer>();
        let seed = 12345;
        const rand = (n: number) => {
          seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
          return (seed >>> 8) % n;
        };
        for (let step = 0; step < 150; step++) {
          const name = names[rand(names.length)] as string;
          const cur = model.get(name);
          const op = rand(10);
          const ctx = `step ${step} op ${op} on ${name}`;
          if (op < 5) {
            const offset = rand(3) === 0 ? rand(4) * 4096 : rand(20_000);
            const data = patternBytes(1 + rand(rand(2) ? 9000 : 300), step + 1);
            await b.write(name, offset, data);
            const next = Buffer.alloc(Math.max(cur?.length ?? 0, offset + data.length));
            cur?.copy(next);
            data.copy(next, offset);
            model.set(name, next);
          } else if (op === 5) {
            const data = patternBytes(rand(6000), step + 1);
            await b.writeFull(name, data);
            model.set(name, Buffer.from(data));
          } else if (op === 6) {
            expect(await b.delete(name), ctx).toBe(cur !== undefined);
            model.delete(name);
          } else if (op === 7) {
            const dst = names[rand(names.length)] as string;
            await b.copy(name, dst, { missingOk: true });
            model.set(dst, Buffer.from(cur ?? Buffer.alloc(0)));
          } else {
            const offset = rand(25_000);
            const length = rand(9000);
            const got = await b.read(name, offset, length, { missingOk: true });
            const want = Buffer.alloc(length);
            cur?.copy(want, 0, Math.min(offset, cur.length), Math.min(offset + length, cur.length));
            expect(got.equals(want), ctx).toBe(true);
            expect((await b.info(name))?.size ?? null, ctx).toBe(cur ? cur.length : null);
          }
        }
        for (const name of names) {
          const cur = model.get(name);
          expect((await b.info(name))?.size ?? null).toBe(cur ? cur.length : null);
          if (cur) expect((await b.read(name, 0, cur.length)).equals(cur)).toBe(true);
        }
      });
    });

    describe('writeFull', () => {
      it('creates an object', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        const data = patternBytes(70_000, 4);
        await b.writeFull(name, data);
        expect(await b.info(name)).toMatchObject({ size: data.length });
        expect((await b.read(name, 0, data.length)).equals(data)).toBe(true);
      });

      it('replaces the whole object and truncates what was beyond', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        await b.write(name, 0, patternBytes(10_000, 5));
        await b.writeFull(name, Buffer.from('short'));
        expect(await b.info(name)).toMatchObject({ size: 5 });
        const back = await b.read(name, 0, 20);
        expect(back.subarray(0, 5).toString()).toBe('short');
        expect(back.subarray(5).equals(Buffer.alloc(15))).toBe(true);
      });

      it('writes an empty object that exists with size 0', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        await b.write(name, 0, Buffer.from('something'));
        await b.writeFull(name, new Uint8Array(0));
        expect(await b.exists(name)).toBe(true);
        expect(await b.info(name)).toMatchObject({ size: 0 });
      });

      it('is seen by a later write and read on the same blocker', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        await b.write(name, 0, Buffer.from('aaaaaaaa'));
        await b.read(name, 0, 8);
        await b.writeFull(name, Buffer.from('bbbb'));
        await b.write(name, 2, Buffer.from('CC'));
        expect((await b.read(name, 0, 4)).toString()).toBe('bbCC');
      });
    });

    describe('copy', () => {
      it('copies an object to a new name', async () => {
        const b = await open();
        const p = prefix();
        const data = patternBytes(300_000, 6);
        await b.write(`${p}src`, 0, data);
        await b.copy(`${p}src`, `${p}dst`);
        expect(await b.info(`${p}dst`)).toMatchObject({ size: data.length });
        expect((await b.read(`${p}dst`, 0, data.length)).equals(data)).toBe(true);
      });

      it('replaces an existing destination entirely', async () => {
        const b = await open();
        const p = prefix();
        await b.write(`${p}dst`, 0, patternBytes(50_000, 7));
        await b.read(`${p}dst`, 0, 10);
        await b.write(`${p}src`, 0, Buffer.from('small'));
        await b.copy(`${p}src`, `${p}dst`);
        expect(await b.info(`${p}dst`)).toMatchObject({ size: 5 });
        expect((await b.read(`${p}dst`, 0, 5)).toString()).toBe('small');
      });

      it('makes an independent copy', async () => {
        const b = await open();
        const p = prefix();
        await b.write(`${p}src`, 0, Buffer.from('before'));
        await b.copy(`${p}src`, `${p}dst`);
        await b.write(`${p}src`, 0, Buffer.from('AFTER!'));
        await b.write(`${p}dst`, 0, Buffer.from('d'));
        expect((await b.read(`${p}dst`, 0, 6)).toString()).toBe('defore');
        expect((await b.read(`${p}src`, 0, 6)).toString()).toBe('AFTER!');
      });

      it('fails with ENOENT_OBJECT for a missing source and leaves the destination alone', async () => {
        const b = await open();
        const p = prefix();
        await b.write(`${p}dst`, 0, Buffer.from('keep me'));
        const want = missingSourceError(`${p}nosrc`);
        await expectRefusal('copy', () => b.copy(`${p}nosrc`, `${p}dst`), want);
        expect((await b.read(`${p}dst`, 0, 7)).toString()).toBe('keep me');
        await expectCode(b.copy(`${p}nosrc`, `${p}nodst`), 'ENOENT_OBJECT');
        expect(await b.exists(`${p}nodst`)).toBe(false);
      });

      it('makes the destination empty for a missing source with missingOk', async () => {
        const b = await open();
        const p = prefix();
        await b.write(`${p}dst`, 0, Buffer.from('old content'));
        await b.copy(`${p}nosrc`, `${p}dst`, { missingOk: true });
        expect(await b.info(`${p}dst`)).toMatchObject({ size: 0 });
        await b.copy(`${p}nosrc`, `${p}fresh`, { missingOk: true });
        expect(await b.info(`${p}fresh`)).toMatchObject({ size: 0 });
      });

      it('copies an object onto itself without losing it', async () => {
        const b = await open();
        const name = `${prefix()}self`;
        await b.write(name, 0, Buffer.from('same'));
        await b.copy(name, name);
        expect((await b.read(name, 0, 4)).toString()).toBe('same');
        expect(await b.info(name)).toMatchObject({ size: 4 });
      });
    });

    describe('delete, info, exists', () => {
      it('deletes an object: true the first time, false after', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        await b.write(name, 0, Buffer.from('x'));
        await b.read(name, 0, 1);
        expect(await b.delete(name)).toBe(true);
        expect(await b.delete(name)).toBe(false);
        expect(await b.exists(name)).toBe(false);
        expect(await b.info(name)).toBeNull();
        await expectCode(b.read(name, 0, 1), 'ENOENT_OBJECT');
      });

      it('resolves false when deleting an object that never existed', async () => {
        const b = await open();
        expect(await b.delete(`${prefix()}never`)).toBe(false);
      });

      it('recreates a deleted object from scratch', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        await b.write(name, 0, patternBytes(9000, 8));
        await b.delete(name);
        await b.write(name, 0, Buffer.from('new'));
        expect(await b.info(name)).toMatchObject({ size: 3 });
        expect((await b.read(name, 0, 3)).toString()).toBe('new');
      });

      it('reports info and exists', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        expect(await b.info(name)).toBeNull();
        expect(await b.exists(name)).toBe(false);
        await b.write(name, 12_345, Buffer.from('z'));
        expect(await b.info(name)).toMatchObject({ size: 12_346 });
        expect(await b.exists(name)).toBe(true);
      });

      it('reports when an object was last written (mtime), where the blocker can tell', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        const copy = `${prefix()}copy`;
        const before = Date.now();
        await b.write(name, 0, Buffer.from('m'));
        const first = await b.info(name);
        if (first?.mtime === undefined) return; // the blocker cannot tell (allowed)
        // Whole-second backends (RADOS) truncate; filesystems may round to their tick.
        expect(first.mtime).toBeGreaterThanOrEqual(before - 2000);
        expect(first.mtime).toBeLessThanOrEqual(Date.now() + 1000);
        await b.copy(name, copy);
        expect((await b.info(copy))?.mtime).toBeGreaterThanOrEqual(before - 2000);
        await b.writeFull(name, Buffer.from('later'));
        expect((await b.info(name))?.mtime).toBeGreaterThanOrEqual(first.mtime);
      });
    });

    describe('list', () => {
      it('lists the objects under a prefix, and no lock objects', async () => {
        const b = await open(IDENTITY_A);
        const p = prefix();
        await b.write(`${p}a`, 0, Buffer.from('1'));
        await b.writeFull(`${p}b`, Buffer.from('2'));
        await b.write(`${p}c`, 0, Buffer.from('3'));
        await b.copy(`${p}c`, `${p}d`);
        await b.write(`${p}gone`, 0, Buffer.from('4'));
        await b.delete(`${p}gone`);
        await b.write(`other${p}`, 0, Buffer.from('5'));
        await b.acquire(`${p}a`);
        await b.acquire(`${p}vol`);
        const listed = await collect(b.list(p));
        expect(listed.sort()).toEqual([`${p}a`, `${p}b`, `${p}c`, `${p}d`]);
        const all = await collect(b.list());
        expect(all).toEqual(expect.arrayContaining([`${p}a`, `${p}b`, `${p}c`, `${p}d`, `other${p}`]));
        expect(all.filter((n) => n.startsWith(p) && n.endsWith(LOCK_SUFFIX))).toEqual([]);
        expect(new Set(all).size).toBe(all.length);
        await b.release(`${p}a`);
        await b.release(`${p}vol`);
      });

      it('lists nothing for a prefix nothing has', async () => {
        const b = await open();
        expect(await collect(b.list(`${prefix()}none-`))).toEqual([]);
      });
    });

    describe('locks', () => {
      it('acquires a free lock, records the owner, and is idempotent for that owner', async () => {
        const a = await open(IDENTITY_A);
        const name = `${prefix()}vol`;
        expect(await a.lockOwner(name)).toBeNull();
        await a.acquire(name);
        expect(await a.lockOwner(name)).toBe(IDENTITY_A);
        await a.acquire(name);
        await a.acquire(name, { wait: true, timeoutMs: 1000 });
        expect(await a.lockOwner(name)).toBe(IDENTITY_A);
        await a.release(name);
        expect(await a.lockOwner(name)).toBeNull();
      });

      it('treats the lock and the object of the same name as separate things', async () => {
        const a = await open(IDENTITY_A);
        const name = `${prefix()}vol`;
        await a.acquire(name);
        expect(await a.exists(name)).toBe(false);
        await a.write(name, 0, Buffer.from('map'));
        expect(await a.delete(name)).toBe(true);
        expect(await a.lockOwner(name)).toBe(IDENTITY_A);
        await a.release(name);
      });

      it('refuses a lock held by another identity with ELOCKED naming the owner', async () => {
        const { a, b, name } = await heldByA();
        const e = await expectRefusal('acquire', () => b.acquire(name), lockedError(name, IDENTITY_A));
        expect(e.details).toEqual({ lock: name, owner: IDENTITY_A });
        expect(await b.lockOwner(name)).toBe(IDENTITY_A);
        expect(await a.lockOwner(name)).toBe(IDENTITY_A);
      });

      it('refuses a release by a non-owner with ELOCKED and keeps the lock', async () => {
        const { a, b, name } = await heldByA();
        const want = notOwnerError(name, IDENTITY_A, IDENTITY_B);
        const e = await expectRefusal('release', () => b.release(name), want);
        expect(e.details).toEqual({ lock: name, owner: IDENTITY_A });
        expect(await b.lockOwner(name)).toBe(IDENTITY_A);
        await a.release(name);
      });

      it('breaks another owner’s lock with a forced release', async () => {
        const { a, b, name } = await heldByA();
        await b.release(name, { force: true });
        expect(await a.lockOwner(name)).toBeNull();
        await b.acquire(name);
        expect(await a.lockOwner(name)).toBe(IDENTITY_B);
        await expectCode(a.release(name), 'ELOCKED');
        await b.release(name);
      });

      it('fails the release of a free lock with ENOTLOCKED (forced or not)', async () => {
        const a = await open(IDENTITY_A);
        const name = `${prefix()}vol`;
        const want = notLockedError(name);
        await expectRefusal('release', () => a.release(name), want);
        await expectRefusal('forced release', () => a.release(name, { force: true }), want);
        await a.acquire(name);
        await a.release(name);
        const e = await expectRefusal('second release', () => a.release(name), want);
        expect(e.details).toEqual({ lock: name });
      });

      it('hands a released lock to the next identity', async () => {
        const a = await open(IDENTITY_A);
        const b = await open(IDENTITY_B);
        const name = `${prefix()}vol`;
        await a.acquire(name);
        await a.release(name);
        await b.acquire(name);
        expect(await a.lockOwner(name)).toBe(IDENTITY_B);
        await b.release(name);
      });

      it('gives a contended lock to exactly one of two concurrent acquirers', async () => {
        const a = await open(IDENTITY_A);
        const b = await open(IDENTITY_B);
        for (let i = 0; i < 5; i++) {
          const name = `${prefix()}race`;
          const results = await Promise.allSettled([a.acquire(name), b.acquire(name)]);
          const won = results.filter((r) => r.status === 'fulfilled');
          expect(won.length).toBe(1);
          const lost: unknown = results.find((r) => r.status === 'rejected')?.reason;
          expect(ArchipelagoError.is(lost, 'ELOCKED')).toBe(true);
          const owner = await a.lockOwner(name);
          expect(owner).toBe(results[0]?.status === 'fulfilled' ? IDENTITY_A : IDENTITY_B);
          expect(ArchipelagoError.isInstance(lost) && lost.details.owner).toBe(owner);
        }
      });

      it('keeps locks held across close(): they belong to the identity', async () => {
        const a = await open(IDENTITY_A);
        const name = `${prefix()}vol`;
        await a.acquire(name);
        await a.close();
        const b = await open(IDENTITY_B);
        expect(await b.lockOwner(name)).toBe(IDENTITY_A);
        const a2 = await open(IDENTITY_A);
        await a2.acquire(name);
        await a2.release(name);
      });

      it.skipIf(!blockingAcquire)('resolves a waiting acquire of a free lock at once', async () => {
        const b = await open(IDENTITY_B);
        const name = `${prefix()}vol`;
        await b.acquire(name, { wait: true, timeoutMs: 5000 });
        expect(await b.lockOwner(name)).toBe(IDENTITY_B);
      });

      it.skipIf(!blockingAcquire)('blocks a waiting acquire until the holder releases', async () => {
        const { a, b, name } = await heldByA();
        const waiting = b.acquire(name, { wait: true, timeoutMs: 10_000 });
        expect(await stateAfter(waiting, 300)).toBe('pending');
        expect(await a.lockOwner(name)).toBe(IDENTITY_A);
        const releasedAt = Date.now();
        await a.release(name);
        await waiting;
        expect(Date.now() - releasedAt).toBeLessThan(5000);
        expect(await a.lockOwner(name)).toBe(IDENTITY_B);
        await b.release(name);
      });

      it.skipIf(!blockingAcquire)('gives up a waiting acquire with ETIMEDOUT', async () => {
        const { b, name } = await heldByA();
        const t0 = Date.now();
        const waiting = () => b.acquire(name, { wait: true, timeoutMs: 400 });
        const e = await expectRefusal('acquire', waiting, lockTimeoutError(name, IDENTITY_A, 400));
        const took = Date.now() - t0;
        expect(took).toBeGreaterThanOrEqual(350);
        expect(took).toBeLessThan(5000);
        expect(e.details).toEqual({ lock: name, owner: IDENTITY_A, timeoutMs: 400 });
        expect(await b.lockOwner(name)).toBe(IDENTITY_A);
      });
    });

    describe('lock records, leases and take-over', () => {
      const self = currentProcess();
      /** A process of this host that is gone (no such pid). */
      const deadHere: LockProcess = { ...self, pid: 2 ** 22 + 17, start: '1' };
      /** A live process of another host (another hostname): known only by its lease. */
      const elsewhere: LockProcess = {
        host: `${self.host}-other`,
        boot: 'another-boot',
        pid: 4242,
        start: '42',
      };

      it('records the owner, the holding process and a lease; host holds have neither', async () => {
        const a = await open(IDENTITY_A);
        const name = `${prefix()}vol`;
        const t0 = Date.now();
        const r = await a.acquire(name, { leaseMs: 60_000 });
        expect(r).toEqual({ took: true, previous: null, tookOver: null });
        const info = await a.lockInfo(name);
        expect(info?.owner).toBe(IDENTITY_A);
        expect(info?.process).toEqual(self);
        expect(info?.expires).toBeGreaterThanOrEqual(t0 + 60_000);
        expect(info?.expires).toBeLessThan(Date.now() + 61_000);
        const host = `${prefix()}vol`;
        await a.acquire(host, { hold: 'host' });
        expect(await a.lockInfo(host)).toMatchObject({ owner: IDENTITY_A, process: null, expires: null });
        expect(await a.lockInfo(`${prefix()}free`)).toBeNull();
      });

      it('lets a process adopt a host hold and hand it back, without taking it', async () => {
        const a = await open(IDENTITY_A);
        const name = `${prefix()}vol`;
        await a.acquire(name, { hold: 'host' });
        const adopt = await a.acquire(name);
        expect(adopt.took).toBe(false);
        expect(adopt.previous).toMatchObject({ owner: IDENTITY_A, process: null });
        expect((await a.lockInfo(name))?.process).toEqual(self);
        const back = await a.acquire(name, { hold: 'host' });
        expect(back.took).toBe(false);
        expect(await a.lockInfo(name)).toMatchObject({ owner: IDENTITY_A, process: null, expires: null });
        await a.release(name);
      });

      it('renews its own lease; a lost lock fails the renewal with ELOCKED', async () => {
        const a = await open(IDENTITY_A);
        const b = await open(IDENTITY_B);
        const name = `${prefix()}vol`;
        await a.acquire(name, { leaseMs: 5_000 });
        const first = (await a.lockInfo(name))?.expires as number;
        await new Promise((r) => setTimeout(r, 20));
        const renewed = await a.renew(name, { leaseMs: 30_000 });
        expect(renewed.expires).toBeGreaterThan(first + 20_000);
        expect((await a.lockInfo(name))?.expires).toBe(renewed.expires);
        // The lock goes to B (a forced release, as an administrator would): A's renewal says so.
        await b.release(name, { force: true });
        await b.acquire(name);
        const lost = await expectCode(a.renew(name), 'ELOCKED');
        expect(lost.details).toMatchObject({ lock: name, lost: true });
        expect(await a.lockOwner(name)).toBe(IDENTITY_B);
        await b.release(name);
        await expectCode(a.renew(name), 'ENOTLOCKED');
      });

      it('takes over the lock of a dead process of this host, and says why', async () => {
        const a = await open(IDENTITY_A);
        const b = await open(IDENTITY_B);
        const name = `${prefix()}vol`;
        await a.acquire(name, { as: deadHere });
        const r = await b.acquire(name);
        expect(r.took).toBe(true);
        expect(r.previous).toMatchObject({ owner: IDENTITY_A, process: deadHere });
        expect(r.tookOver).toMatch(/its process \d+ on .* is gone/);
        expect(await b.lockInfo(name)).toMatchObject({ owner: IDENTITY_B, process: self });
        await b.release(name);
      });

      it("takes over its own identity's lock from a dead process as a lock it took", async () => {
        const a = await open(IDENTITY_A);
        const name = `${prefix()}vol`;
        await a.acquire(name, { as: deadHere });
        const r = await a.acquire(name);
        expect(r.took).toBe(true);
        expect(r.tookOver).toMatch(/is gone/);
        expect((await a.lockInfo(name))?.process).toEqual(self);
        await a.release(name);
      });

      it('takes over the lock of a process elsewhere only once its lease has expired', async () => {
        const a = await open(IDENTITY_A);
        const b = await open(IDENTITY_B);
        const name = `${prefix()}vol`;
        await a.acquire(name, { as: elsewhere, leaseMs: 400 });
        await expectCode(b.acquire(name), 'ELOCKED');
        await new Promise((r) => setTimeout(r, 600));
        const r = await b.acquire(name);
        expect(r.took).toBe(true);
        expect(r.tookOver).toMatch(/lease expired/);
        expect(await a.lockOwner(name)).toBe(IDENTITY_B);
        await b.release(name);
      });

      it('never takes over a host hold, and leaves another live process of this identity alone', async () => {
        const a = await open(IDENTITY_A);
        const b = await open(IDENTITY_B);
        const name = `${prefix()}vol`;
        await a.acquire(name, { hold: 'host' });
        await expectCode(b.acquire(name), 'ELOCKED');
        const parent: LockProcess = { ...self, pid: process.ppid, start: processStart(process.ppid) ?? '0' };
        const other = `${prefix()}vol`;
        await a.acquire(other, { as: parent });
        const r = await a.acquire(other);
        expect(r).toMatchObject({ took: false, tookOver: null });
        expect((await a.lockInfo(other))?.process).toEqual(parent);
      });

      it('breakLock: EBUSY for a live process of this host; fences and frees a dead or host-held lock', async () => {
        const a = await open(IDENTITY_A);
        const b = await open(IDENTITY_B);
        const live = `${prefix()}vol`;
        await a.acquire(live);
        const busy = await expectCode(b.breakLock(live), 'EBUSY');
        expect(busy.message).toMatch(/live process of this host/);
        expect(await b.lockOwner(live)).toBe(IDENTITY_A);
        const host = `${prefix()}vol`;
        await a.acquire(host, { hold: 'host' });
        expect((await b.breakLock(host)).fenced).toBe('held by the host: no process');
        expect(await b.lockOwner(host)).toBeNull();
        const dead = `${prefix()}vol`;
        await a.acquire(dead, { as: deadHere });
        const report = await b.breakLock(dead);
        expect(report.previous).toMatchObject({ owner: IDENTITY_A, process: deadHere });
        expect(report.fenced).toMatch(/is gone/);
        expect(await b.lockOwner(dead)).toBeNull();
        await expectCode(b.breakLock(dead), 'ENOTLOCKED');
      });

      it('breakLock of a live holder elsewhere: fences it (blocklist or its lease), and its renewal fails', async () => {
        const a = await open(IDENTITY_A);
        const b = await open(IDENTITY_B);
        const name = `${prefix()}vol`;
        await a.acquire(name, { as: elsewhere, leaseMs: 500 });
        const waits: number[] = [];
        const t0 = Date.now();
        const report = await b.breakLock(name, { onWait: (_what, ms) => waits.push(ms) });
        expect(report.previous).toMatchObject({ owner: IDENTITY_A, process: elsewhere });
        if (report.fenced === 'its lease ran out') {
          // No way to cut the holder off: the breaker waited until its lease ended.
          expect(Date.now()).toBeGreaterThanOrEqual((report.previous.expires as number) - 5);
          expect(waits.length).toBe(1);
        } else expect(report.fenced).toMatch(/^blocklisted /);
        expect(Date.now() - t0).toBeLessThan(10_000);
        expect(await b.lockOwner(name)).toBeNull();
        await expectCode(a.renew(name, { as: elsewhere }), 'ENOTLOCKED');
      });
    });

    describe('concurrency', () => {
      it('runs 50 concurrent writes to distinct objects', async () => {
        const b = await open();
        const p = prefix();
        const n = 50;
        await Promise.all(
          Array.from({ length: n }, (_, i) => b.write(`${p}${i}`, i * 512, patternBytes(20_000, i))),
        );
        const back = await Promise.all(
          Array.from({ length: n }, (_, i) => b.read(`${p}${i}`, i * 512, 20_000)),
        );
        back.forEach((buf, i) => {
          expect(buf.equals(patternBytes(20_000, i)), `object ${i}`).toBe(true);
        });
        expect((await collect(b.list(p))).length).toBe(n);
      });

      it('lands concurrent writes to disjoint ranges of one object', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        const piece = 1000; // deliberately not a multiple of any block size
        const n = 24;
        await Promise.all(
          Array.from({ length: n }, (_, i) => b.write(name, i * piece, patternBytes(piece, 100 + i))),
        );
        const all = await b.read(name, 0, n * piece);
        for (let i = 0; i < n; i++) {
          expect(
            all.subarray(i * piece, (i + 1) * piece).equals(patternBytes(piece, 100 + i)),
            `piece ${i}`,
          ).toBe(true);
        }
        expect(await b.info(name)).toMatchObject({ size: n * piece });
      });

      it('serves concurrent reads of one object', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        const data = patternBytes(64 * 1024, 11);
        await b.write(name, 0, data);
        const reads = await Promise.all(Array.from({ length: 32 }, (_, i) => b.read(name, i * 2048, 2048)));
        reads.forEach((r, i) => {
          expect(r.equals(data.subarray(i * 2048, (i + 1) * 2048))).toBe(true);
        });
      });
    });

    describe('release requests (cooperative hand-over)', () => {
      it("reports another owner's request at the holder's renewal, and drops it when the lock changes hands", async () => {
        const a = await open(IDENTITY_A);
        const b = await open(IDENTITY_B);
        const name = `${prefix()}vol`;
        expect(await b.requestRelease(name)).toBeNull(); // free: nothing to ask
        await a.acquire(name, { leaseMs: 60_000 });
        expect((await a.renew(name)).releaseRequested).toBeUndefined();
        const t0 = Date.now();
        const asked = await b.requestRelease(name);
        expect(asked?.owner).toBe(IDENTITY_A);
        const renewed = await a.renew(name);
        expect(renewed.releaseRequested?.by).toBe(IDENTITY_B);
        expect(renewed.releaseRequested?.at).toBeGreaterThanOrEqual(t0 - 1000);
        // Still A's until A lets go: a request takes nothing by itself.
        await expectCode(b.acquire(name), 'ELOCKED');
        await a.release(name);
        const took = await b.acquire(name, { leaseMs: 60_000 });
        expect(took.took).toBe(true);
        // The request was A's to answer: B's renewals do not see it.
        expect((await b.renew(name)).releaseRequested).toBeUndefined();
        await b.release(name);
      });

      it('names the requester it is given, and refuses a bad one with EINVAL', async () => {
        const a = await open(IDENTITY_A);
        const b = await open(IDENTITY_B);
        const name = `${prefix()}vol`;
        await a.acquire(name, { leaseMs: 60_000 });
        await b.requestRelease(name, { by: 'mapper-of-b_7' });
        expect((await a.renew(name)).releaseRequested?.by).toBe('mapper-of-b_7');
        await expectCode(b.requestRelease(name, { by: '' }), 'EINVAL');
        await expectCode(b.requestRelease('../x'), 'EINVAL_NAME');
        await a.release(name);
      });

      it('wakes the holder that watches the lock, when the blocker can watch', async () => {
        const a = await open(IDENTITY_A);
        const b = await open(IDENTITY_B);
        const name = `${prefix()}vol`;
        await a.acquire(name, { leaseMs: 60_000 });
        if (a.watchRelease === undefined) {
          await a.release(name);
          return; // the renewal reports requests (tested above)
        }
        let woken = 0;
        const stop = a.watchRelease(name, () => {
          woken++;
        });
        try {
          await b.requestRelease(name);
          const deadline = Date.now() + 5000;
          while (woken === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
          expect(woken).toBeGreaterThan(0);
        } finally {
          stop();
          await a.release(name);
        }
      });
    });

    describe('names', () => {
      it('accepts every name the rules allow, up to 123 characters', async () => {
        const b = await open();
        const p = prefix();
        const names = [`${p}a.b-c_d`, `.${p}`, `..${p}`, `${p}${'n'.repeat(123 - p.length)}`];
        for (const name of names) {
          expect(name.length).toBeLessThanOrEqual(123);
          await b.write(name, 0, Buffer.from(name));
          expect((await b.read(name, 0, name.length)).toString()).toBe(name);
          await b.acquire(name);
          await b.release(name);
          expect(await b.delete(name)).toBe(true);
        }
      });

      it('refuses bad names (and names that are no string) with EINVAL_NAME, writing nothing', async () => {
        const b = await open(IDENTITY_A);
        const good = `${prefix()}good`;
        await b.write(good, 0, Buffer.from('g'));
        const before = (await collect(b.list())).sort();
        for (const bad of [...BAD_NAMES, ...NON_STRING_NAMES]) {
          for (const [what, role, call] of callsOn(b, bad as string, good)) {
            const e = await expectRefusal(`${what}(${String(bad)})`, call, nameError(bad, role) as Error);
            expect(e.details.name).toEqual(bad);
          }
        }
        expect((await collect(b.list())).sort()).toEqual(before);
        expect(await b.exists(`${good}2`)).toBe(false);
        expect(await b.exists(`${good}3`)).toBe(false);
      });
    });

    describe('misuse: every blocker refuses it with the same error', () => {
      it('refuses offsets, lengths and sizes that are no integer >= 0 with EINVAL, writing nothing', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        for (const n of BAD_COUNTS) {
          const bad = n as number;
          const calls: Array<[string, () => Promise<unknown>, Error | null]> = [
            ['read offset', () => b.read(name, bad, 1), countError(n, 'offset')],
            ['read length', () => b.read(name, 0, bad), lengthError(n)],
            ['write offset', () => b.write(name, bad, Buffer.from('x')), countError(n, 'offset')],
          ];
          if (b.readInto) {
            const into = b.readInto.bind(b);
            calls.push(['readInto offset', () => into(name, bad, Buffer.alloc(1)), countError(n, 'offset')]);
          }
          if (b.hash) {
            const hash = b.hash.bind(b);
            calls.push(['hash size', () => hash(name, bad), lengthError(n, 'size')]);
          }
          for (const [what, call, want] of calls)
            await expectRefusal(`${what} ${String(n)}`, call, want as Error);
        }
        const tooLong = MAX_READ + 1;
        await expectRefusal('read length', () => b.read(name, 0, tooLong), lengthError(tooLong) as Error);
        expect(await b.exists(name)).toBe(false);
      });

      it('refuses data that is no Uint8Array with a TypeError, writing nothing', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        for (const d of NOT_BYTES) {
          const want = dataError(d) as TypeError;
          await expectRefusal(`write ${String(d)}`, () => b.write(name, 0, d as Uint8Array), want);
          await expectRefusal(`writeFull ${String(d)}`, () => b.writeFull(name, d as Uint8Array), want);
        }
        expect(await b.exists(name)).toBe(false);
      });

      it('refuses a readInto target that is no Buffer, a list prefix that is no string (TypeError)', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        if (b.readInto) {
          const into = b.readInto.bind(b);
          for (const t of [new Uint8Array(4), 'abc', null]) {
            await expectRefusal(
              `readInto ${String(t)}`,
              () => into(name, 0, t as Buffer),
              targetError(t) as Error,
            );
          }
        }
        for (const prefix of [42, null, {}]) {
          const call = () => collect(b.list(prefix as string));
          await expectRefusal(`list ${String(prefix)}`, call, prefixError(prefix) as Error);
        }
      });

      it('refuses a wait timeout that is no number >= 0 with EINVAL, taking nothing', async () => {
        const b = await open();
        const name = `${prefix()}vol`;
        for (const t of [-1, Number.NaN, Number.NEGATIVE_INFINITY, '100', null]) {
          const call = () => b.acquire(name, { wait: true, timeoutMs: t as number });
          await expectRefusal(`acquire timeoutMs ${String(t)}`, call, timeoutError(t, name) as Error);
        }
        expect(await b.lockOwner(name)).toBeNull();
      });

      it('checks in one order: closed, then the name, then the offset, then the rest', async () => {
        const b = await open();
        const name = `${prefix()}obj`;
        await expectRefusal('read', () => b.read('a/b', -1, -1), nameError('a/b') as Error);
        await expectRefusal('read', () => b.read(name, -1, -1), countError(-1, 'offset') as Error);
        await expectRefusal(
          'write',
          () => b.write(name, -1, 'x' as never),
          countError(-1, 'offset') as Error,
        );
        await b.close();
        await expectRefusal('read', () => b.read('a/b', -1, -1), closedError());
        await expectRefusal('write', () => b.write('a/b', 0, 'x' as never), closedError());
      });
    });

    describe('hash (content addressing)', () => {
      const ZERO = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
      const NO_HASH = 'this blocker does not implement the optional hash() (contract.ts)';
      const hex = (d: Uint8Array) => createHash('sha256').update(d).digest('hex');
      /** Deterministic content, distinct per test (content names are global, not prefixed). */
      const content = (size: number, seed: number) => patternBytes(size, 0x4a5b0000 + seed);

      /** Opens a blocker; skips the test, with the reason shown, when it cannot hash. */
      async function hasher(ctx: { skip: (note?: string) => never }, identity?: string) {
        const b = await open(identity);
        if (!b.hash) ctx.skip(NO_HASH);
        return b as Blocker & { hash: (name: string, size: number) => Promise<string> };
      }

      it('names the object by the SHA-256 of its bytes and stores them under that name', async (ctx) => {
        const b = await hasher(ctx);
        const name = `${prefix()}obj`;
        const data = content(100_003, 1);
        await b.writeFull(name, data);
        const h = await b.hash(name, data.length);
        expect(h).toBe(hex(data));
        expect(await b.info(h)).toMatchObject({ size: data.length });
        expect((await b.read(h, 0, data.length)).equals(data)).toBe(true);
        // The source object is untouched.
        expect((await b.read(name, 0, data.length)).equals(data)).toBe(true);
      });

      it('strips trailing zeros (Pithos), also the zeros read past the end', async (ctx) => {
        const b = await hasher(ctx);
        const p = prefix();
        const data = content(4099, 2);
        data[data.length - 1] = 7;
        const padded = Buffer.concat([data, Buffer.alloc(70_000)]);
        await b.writeFull(`${p}a`, data);
        await b.writeFull(`${p}b`, padded);
        const h = hex(data);
        expect(await b.hash(`${p}a`, 1 << 20)).toBe(h);
        expect(await b.hash(`${p}b`, padded.length)).toBe(h);
        expect(await b.info(h)).toMatchObject({ size: data.length });
        // Only the first `size` bytes count.
        expect(await b.hash(`${p}a`, 1000)).toBe(hex(stripZeros(data.subarray(0, 1000))));
      });

      it('gives the zero-block name for all-zero, empty and missing objects, storing nothing', async (ctx) => {
        const b = await hasher(ctx);
        const p = prefix();
        await b.writeFull(`${p}zeros`, Buffer.alloc(65_536 + 17));
        await b.writeFull(`${p}empty`, Buffer.alloc(0));
        expect(await b.hash(`${p}zeros`, 65_536 + 17)).toBe(ZERO);
        expect(await b.hash(`${p}empty`, 4096)).toBe(ZERO);
        expect(await b.hash(`${p}missing`, 4096)).toBe(ZERO);
        expect(await b.hash(`${p}zeros`, 0)).toBe(ZERO);
        expect(await b.exists(ZERO)).toBe(false);
        expect(await b.exists(`${p}missing`)).toBe(false);
      });

      it('returns the name when the content object already exists (dedup), keeping it intact', async (ctx) => {
        const b = await hasher(ctx);
        const p = prefix();
        const data = content(8192, 3);
        await b.writeFull(`${p}one`, data);
        await b.writeFull(`${p}two`, data);
        const h1 = await b.hash(`${p}one`, data.length);
        const h2 = await b.hash(`${p}two`, data.length);
        const h3 = await b.hash(`${p}one`, data.length);
        expect(h1).toBe(hex(data));
        expect(h2).toBe(h1);
        expect(h3).toBe(h1);
        expect((await b.read(h1, 0, data.length)).equals(data)).toBe(true);
        expect(await b.info(h1)).toMatchObject({ size: data.length });
        expect((await collect(b.list(h1))).filter((n) => n === h1)).toEqual([h1]);
      });

      it('stores identical content hashed concurrently exactly once, whole', async (ctx) => {
        const b = await hasher(ctx);
        const other = await open(IDENTITY_B);
        const p = prefix();
        const data = content(256 * 1024 + 5, 4);
        const names = Array.from({ length: 12 }, (_, i) => `${p}src${i}`);
        await Promise.all(names.map((n) => b.writeFull(n, data)));
        const hashOf = (x: Blocker, n: string) => (x.hash ? x.hash(n, data.length) : Promise.resolve(''));
        const hs = await Promise.all(names.map((n, i) => hashOf(i % 2 ? other : b, n)));
        expect(new Set(hs)).toEqual(new Set([hex(data)]));
        expect((await b.read(hex(data), 0, data.length)).equals(data)).toBe(true);
        expect(await b.info(hex(data))).toMatchObject({ size: data.length });
        expect((await collect(b.list(hex(data)))).filter((n) => n === hex(data))).toHaveLength(1);
      });
    });

    describe('lifecycle', () => {
      it('flushes', async () => {
        const b = await open();
        await b.write(`${prefix()}obj`, 0, Buffer.from('x'));
        await expect(b.flush()).resolves.toBeUndefined();
      });

      it('fails every call after close() with ECLOSED; close is idempotent', async () => {
        const b = await open(IDENTITY_A);
        const name = `${prefix()}obj`;
        await b.write(name, 0, Buffer.from('x'));
        await b.close();
        await b.close();
        const calls: Array<[string, () => Promise<unknown>]> = [
          ...callsOn(b, name, name).map(([what, , call]): [string, () => Promise<unknown>] => [what, call]),
          ['list', () => collect(b.list())],
          ['flush', () => b.flush()],
        ];
        for (const [what, call] of calls) await expectRefusal(what, call, closedError());
        const other = await open();
        expect((await other.read(name, 0, 1)).toString()).toBe('x');
        expect(await other.exists(`${name}2`)).toBe(false);
      });

      it.skipIf(!blockingAcquire)('ends a waiting acquire when the blocker closes', async () => {
        const { a, b, name } = await heldByA();
        const waiting = b.acquire(name, { wait: true, timeoutMs: 30_000 });
        waiting.catch(() => {});
        await new Promise((r) => setTimeout(r, 50));
        const t0 = Date.now();
        await b.close();
        await expectRefusal('waiting acquire', () => waiting, closedError());
        expect(Date.now() - t0).toBeLessThan(5000);
        expect(await a.lockOwner(name)).toBe(IDENTITY_A);
      });
    });
  });
}

export { MemoryBlocker, type MemoryBlockerOptions, MemoryStore } from './memory.js';
