import { createHash, randomBytes } from 'node:crypto';
import { fc, test } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import { expectCorrupt } from './__fixtures__/corrupt.js';
import {
  DEFAULT_BLOCKSIZE,
  decodeV0,
  decodeV1,
  detectVersion,
  MapFlag,
  ObjFlag,
  ZERO_BLOCK,
} from './index.js';

const MiB = 1024 * 1024;
const VOL = 'legacy-vol';
const ZERO_DIGEST = Buffer.from(ZERO_BLOCK, 'hex');
const digestOf = (s: string) => createHash('sha256').update(s).digest();

/** A v1 object by hand: LE {u32 1, u64 size} then {u8 flag, 32-byte digest} per entry. */
function v1Object(size: bigint, entries: Array<[number, Buffer]>, padding = 0): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt32LE(1, 0);
  head.writeBigUInt64LE(size, 4);
  const parts: Buffer[] = [head];
  for (const [flag, digest] of entries) parts.push(Buffer.from([flag]), digest);
  parts.push(Buffer.alloc(padding));
  return Buffer.concat(parts);
}

describe('v1 decode', () => {
  it('decodes header and the three kinds of entries', () => {
    const archip = digestOf('myvol_0');
    const pithos = digestOf('some block');
    const obj = v1Object(BigInt(10 * MiB), [
      [1, archip],
      [0, pithos],
      [0, ZERO_DIGEST],
    ]);
    // Byte check of the hand-built header: version 1 and size 0xa00000, both little-endian.
    expect(obj.subarray(0, 12).toString('hex')).toBe('01000000' + '0000a00000000000');
    expect(detectVersion(obj, VOL)).toBe(1);
    const { header, entries } = decodeV1(obj, VOL);
    expect(header).toEqual({ version: 1, size: 10 * MiB, blocksize: DEFAULT_BLOCKSIZE, flags: 0, epoch: 0n });
    expect(entries).toEqual([
      { name: `archip_${archip.toString('hex')}`, flags: ObjFlag.WRITABLE | ObjFlag.ARCHIP },
      { name: pithos.toString('hex'), flags: 0 },
      { name: ZERO_BLOCK, flags: ObjFlag.ZERO },
    ]);
    expect(entries[0]!.name).toHaveLength(71);
  });

  it('any non-zero flag byte means an archip object', () => {
    const d = digestOf('x');
    const { entries } = decodeV1(v1Object(BigInt(4 * MiB), [[0xff, d]]), VOL);
    expect(entries[0]).toEqual({ name: `archip_${d.toString('hex')}`, flags: 3 });
  });

  it('allows zero padding after the entries (a zero-filled object), and size 0', () => {
    const d = digestOf('y');
    expect(decodeV1(v1Object(1n, [[0, d]], 4096), VOL).entries).toHaveLength(1);
    expect(decodeV1(v1Object(0n, [], 100), VOL)).toEqual({
      header: { version: 1, size: 0, blocksize: DEFAULT_BLOCKSIZE, flags: 0, epoch: 0n },
      entries: [],
    });
  });

  test.prop([
    fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ minLength: 32, maxLength: 32 })), {
      maxLength: 40,
    }),
    fc.integer({ min: 0, max: DEFAULT_BLOCKSIZE - 1 }),
  ])('entry i comes from record i', (recs, slack) => {
    const n = recs.length;
    const size = n === 0 ? 0 : (n - 1) * DEFAULT_BLOCKSIZE + 1 + slack;
    const obj = v1Object(
      BigInt(size),
      recs.map(([f, d]) => [f, Buffer.from(d)]),
    );
    const { header, entries } = decodeV1(obj, VOL);
    expect(header.size).toBe(size);
    expect(entries).toHaveLength(n);
    recs.forEach(([f, d], i) => {
      const hex = Buffer.from(d).toString('hex');
      expect(entries[i]!.name).toBe(f !== 0 ? `archip_${hex}` : hex);
    });
  });

  it('entry count does not match size: too few entries -> ECORRUPT_MAP', () => {
    const obj = v1Object(BigInt(10 * MiB), [
      [1, digestOf('a')],
      [1, digestOf('b')],
    ]);
    const err = expectCorrupt(() => decodeV1(obj, VOL), VOL, /entry count does not match size/);
    expect(err.details).toMatchObject({ fault: 'entry-count-mismatch', expected: 3, found: 2 });
    // A partial third record is still too few.
    expectCorrupt(() => decodeV1(Buffer.concat([obj, Buffer.alloc(20, 1)]), VOL), VOL, /entry count/);
  });

  it('entry count does not match size: extra entries -> ECORRUPT_MAP', () => {
    const obj = v1Object(BigInt(4 * MiB), [
      [0, digestOf('a')],
      [0, digestOf('b')],
    ]);
    const err = expectCorrupt(() => decodeV1(obj, VOL), VOL, /entry count does not match size/);
    expect(err.details).toMatchObject({ expected: 1, found: 2 });
  });

  it('truncated v1 header and bad version -> ECORRUPT_MAP', () => {
    expectCorrupt(() => decodeV1(Buffer.from([1, 0, 0, 0, 0]), VOL), VOL, /truncated v1 header/);
    const obj = v1Object(0n, []);
    obj.writeUInt32LE(2, 0);
    expectCorrupt(() => decodeV1(obj, VOL), VOL, /version 2/);
  });

  it('size above Number.MAX_SAFE_INTEGER -> ECORRUPT_MAP', () => {
    expectCorrupt(() => decodeV1(v1Object(2n ** 63n, []), VOL), VOL, /size/);
  });
});

describe('v0 decode', () => {
  it('reads digests up to the first all-zero digest', () => {
    const a = digestOf('a');
    const b = digestOf('b');
    const obj = Buffer.concat([a, ZERO_DIGEST, b, Buffer.alloc(32), digestOf('ignored'), Buffer.alloc(64)]);
    const { header, entries } = decodeV0(obj, VOL);
    expect(header).toEqual({
      version: 0,
      size: 3 * DEFAULT_BLOCKSIZE,
      blocksize: DEFAULT_BLOCKSIZE,
      flags: MapFlag.READONLY,
      epoch: 0n,
    });
    expect(entries).toEqual([
      { name: a.toString('hex'), flags: 0 },
      { name: ZERO_BLOCK, flags: ObjFlag.ZERO },
      { name: b.toString('hex'), flags: 0 },
    ]);
  });

  it('reads to the end when there is no zero digest; an empty object is an empty map', () => {
    const ds = Array.from({ length: 5 }, () => randomBytes(32));
    ds[2]![0] = 1; // never all zero
    const { header, entries } = decodeV0(Buffer.concat(ds), VOL);
    expect(header.size).toBe(5 * DEFAULT_BLOCKSIZE);
    expect(entries.map((e) => e.name)).toEqual(ds.map((d) => d.toString('hex')));
    expect(decodeV0(Buffer.alloc(0), VOL).entries).toEqual([]);
    expect(decodeV0(Buffer.alloc(512), VOL).header.size).toBe(0);
  });

  it('takes the size from v0Size when it agrees with the entry count', () => {
    const obj = Buffer.concat([digestOf('a'), digestOf('b'), Buffer.alloc(32)]);
    expect(decodeV0(obj, VOL, 4 * MiB + 1).header.size).toBe(4 * MiB + 1);
    expect(decodeV0(obj, VOL, 8 * MiB).header.size).toBe(8 * MiB);
  });

  it('entry count does not match v0Size -> ECORRUPT_MAP', () => {
    const obj = Buffer.concat([digestOf('a'), digestOf('b')]);
    for (const v0Size of [0, 4 * MiB, 8 * MiB + 1, 100 * MiB]) {
      const err = expectCorrupt(() => decodeV0(obj, VOL, v0Size), VOL, /entry count does not match size/);
      expect(err.message).toContain(String(v0Size));
      expect(err.details).toMatchObject({ fault: 'entry-count-mismatch', found: 2 });
    }
  });

  it('a partial trailing digest with data -> ECORRUPT_MAP; zero bytes there are fine', () => {
    const obj = Buffer.concat([digestOf('a'), Buffer.from([7, 7, 7])]);
    const err = expectCorrupt(() => decodeV0(obj, VOL), VOL, /truncated v0 entry/);
    expect(err.details.fault).toBe('truncated-entry');
    expect(decodeV0(Buffer.concat([digestOf('a'), Buffer.alloc(5)]), VOL).entries).toHaveLength(1);
  });

  it('rejects a malformed v0Size with EINVAL_SIZE', () => {
    expect(() => decodeV0(Buffer.alloc(0), VOL, -1)).toThrow(
      expect.objectContaining({ code: 'EINVAL_SIZE' }),
    );
    expect(() => decodeV0(Buffer.alloc(0), VOL, 1.5)).toThrow(
      expect.objectContaining({ code: 'EINVAL_SIZE' }),
    );
  });
});
