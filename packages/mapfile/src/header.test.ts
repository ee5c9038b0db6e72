import { fc, test } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import { expectCorrupt } from './__fixtures__/corrupt.js';
import {
  AMF_SIGNATURE,
  DEFAULT_BLOCKSIZE,
  decodeHeaderV2,
  decodeIntent,
  detectVersion,
  encodeHeaderV2,
  encodeIntent,
  entriesPerMapBlock,
  HEADER_V2_SIZE,
  isValidBlocksize,
  MAX_HEADER_SIZE,
  MapFlag,
  mapBlockLocation,
  mapBlockName,
  objectCount,
  UINT64_MAX,
} from './index.js';

const MiB = 1024 * 1024;
const VOL = 'volume-under-test';

function header(fields: {
  sig?: number;
  version?: number;
  size?: bigint;
  bs?: number;
  flags?: number;
  epoch?: bigint;
}) {
  const b = Buffer.alloc(HEADER_V2_SIZE);
  b.writeUInt32BE(fields.sig ?? AMF_SIGNATURE, 0);
  b.writeUInt32BE(fields.version ?? 2, 4);
  b.writeBigUInt64BE(fields.size ?? 0n, 8);
  b.writeUInt32BE(fields.bs ?? DEFAULT_BLOCKSIZE, 16);
  b.writeUInt32BE(fields.flags ?? 0, 20);
  b.writeBigUInt64BE(fields.epoch ?? 0n, 24);
  return b;
}

describe('v2 header golden bytes', () => {
  it('size 10 MiB, bs 4 MiB, flags 1, epoch 5', () => {
    const buf = encodeHeaderV2({ size: 10 * MiB, blocksize: 4 * MiB, flags: MapFlag.READONLY, epoch: 5n });
    expect(buf.length).toBe(32);
    expect(buf.toString('hex')).toBe(
      // "AMF."  version  size (u64 BE)       blocksize flags    epoch (u64 BE)
      '414d462e' + '00000002' + '0000000000a00000' + '00400000' + '00000001' + '0000000000000005',
    );
    expect(decodeHeaderV2(buf, VOL)).toEqual({
      version: 2,
      size: 10 * MiB,
      blocksize: 4 * MiB,
      flags: 1,
      epoch: 5n,
    });
  });

  it('large size, DELETED flag and the largest epoch', () => {
    const buf = encodeHeaderV2({
      size: Number.MAX_SAFE_INTEGER,
      blocksize: 256,
      flags: MapFlag.DELETED,
      epoch: UINT64_MAX,
    });
    expect(buf.toString('hex')).toBe(
      '414d462e' + '00000002' + '001fffffffffffff' + '00000100' + '00000002' + 'ffffffffffffffff',
    );
  });

  it('decodes a header that sits at the start of a zero-filled 512-byte read', () => {
    const head = Buffer.alloc(MAX_HEADER_SIZE);
    encodeHeaderV2({ size: 1, blocksize: 1024, flags: 0, epoch: 1n }).copy(head);
    expect(decodeHeaderV2(head, VOL)).toEqual({ version: 2, size: 1, blocksize: 1024, flags: 0, epoch: 1n });
  });
});

describe('v2 header round trip', () => {
  test.prop([
    fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    fc.integer({ min: 8, max: 31 }),
    fc.integer({ min: 0, max: 0xffffffff }),
    fc.bigInt({ min: 0n, max: UINT64_MAX }),
  ])('decode(encode(h)) == h', (size, log2bs, flags, epoch) => {
    const blocksize = 2 ** log2bs;
    const buf = encodeHeaderV2({ size, blocksize, flags, epoch });
    expect(buf.length).toBe(HEADER_V2_SIZE);
    expect(detectVersion(buf, VOL)).toBe(2);
    expect(decodeHeaderV2(buf, VOL)).toEqual({ version: 2, size, blocksize, flags, epoch });
  });

  it('refuses to encode fields that do not fit', () => {
    const ok = { size: 0, blocksize: 4 * MiB, flags: 0, epoch: 0n };
    expect(() => encodeHeaderV2({ ...ok, size: -1 })).toThrow(RangeError);
    expect(() => encodeHeaderV2({ ...ok, size: 2 ** 53 })).toThrow(RangeError);
    expect(() => encodeHeaderV2({ ...ok, blocksize: 128 })).toThrow(RangeError);
    expect(() => encodeHeaderV2({ ...ok, blocksize: 3000 })).toThrow(RangeError);
    expect(() => encodeHeaderV2({ ...ok, flags: 2 ** 32 })).toThrow(RangeError);
    expect(() => encodeHeaderV2({ ...ok, epoch: -1n })).toThrow(RangeError);
    expect(() => encodeHeaderV2({ ...ok, epoch: UINT64_MAX + 1n })).toThrow(RangeError);
  });
});

describe('detectVersion', () => {
  it('AMF. signature with version 2 is v2', () => {
    expect(detectVersion(header({}), VOL)).toBe(2);
    expect(detectVersion(header({}), VOL, { assumeV0: true })).toBe(2);
  });

  it('little-endian 1 at offset 0 is v1', () => {
    const head = Buffer.alloc(MAX_HEADER_SIZE);
    head.writeUInt32LE(1, 0);
    expect(detectVersion(head, VOL)).toBe(1);
  });

  it('assumeV0 wins over the v1 check and over a missing signature', () => {
    const v1 = Buffer.alloc(16);
    v1.writeUInt32LE(1, 0);
    expect(detectVersion(v1, VOL, { assumeV0: true })).toBe(0);
    expect(detectVersion(Buffer.from('deadbeef'.repeat(8), 'hex'), VOL, { assumeV0: true })).toBe(0);
  });

  it('treats bytes past the end of a short head as zeros', () => {
    expect(detectVersion(Buffer.from([1]), VOL)).toBe(1);
    expect(detectVersion(Buffer.from([0x41, 0x4d, 0x46, 0x2e, 0, 0, 0, 2]), VOL)).toBe(2);
  });

  it('no signature -> ECORRUPT_MAP', () => {
    expectCorrupt(() => detectVersion(Buffer.alloc(MAX_HEADER_SIZE), VOL), VOL, /no signature/);
    expectCorrupt(() => detectVersion(Buffer.alloc(0), VOL), VOL, /no signature/);
    const err = expectCorrupt(() => detectVersion(Buffer.from('GIF89a'), VOL), VOL, /no signature/);
    expect(err.details.fault).toBe('no-signature');
  });

  it('AMF. with a version other than 2 -> ECORRUPT_MAP', () => {
    for (const version of [0, 1, 3, 0xffffffff]) {
      const err = expectCorrupt(() => detectVersion(header({ version }), VOL), VOL, /version/);
      expect(err.message).toContain(String(version));
      expect(err.details.fault).toBe('bad-version');
    }
  });
});

describe('decodeHeaderV2 corruption', () => {
  it('bad signature', () => {
    const err = expectCorrupt(() => decodeHeaderV2(header({ sig: 0x414d462f }), VOL), VOL, /bad signature/);
    expect(err.details.fault).toBe('bad-signature');
  });

  it('bad version', () => {
    const err = expectCorrupt(() => decodeHeaderV2(header({ version: 1 }), VOL), VOL, /version 1/);
    expect(err.details.fault).toBe('bad-version');
  });

  it('bad blocksize: not a power of two, or not greater than 128', () => {
    for (const bs of [0, 1, 64, 128, 129, 3000, 4 * MiB + 1, 0xffffffff]) {
      const err = expectCorrupt(() => decodeHeaderV2(header({ bs }), VOL), VOL, /blocksize/);
      expect(err.message).toContain(String(bs));
      expect(err.details.fault).toBe('bad-blocksize');
    }
    expect(decodeHeaderV2(header({ bs: 256 }), VOL).blocksize).toBe(256);
    expect(decodeHeaderV2(header({ bs: 0x80000000 }), VOL).blocksize).toBe(0x80000000);
  });

  it('size above Number.MAX_SAFE_INTEGER', () => {
    const err = expectCorrupt(() => decodeHeaderV2(header({ size: 2n ** 53n }), VOL), VOL, /size/);
    expect(err.details.fault).toBe('bad-size');
  });

  it('truncated header (< 32 bytes)', () => {
    for (const len of [0, 4, 8, 31]) {
      const err = expectCorrupt(
        () => decodeHeaderV2(header({}).subarray(0, len), VOL),
        VOL,
        /truncated header/,
      );
      expect(err.details.fault).toBe('truncated-header');
    }
  });
});

describe('geometry', () => {
  it('objectCount is ceil(size / blocksize)', () => {
    expect(objectCount(0, 4 * MiB)).toBe(0);
    expect(objectCount(1, 4 * MiB)).toBe(1);
    expect(objectCount(4 * MiB, 4 * MiB)).toBe(1);
    expect(objectCount(4 * MiB + 1, 4 * MiB)).toBe(2);
    expect(objectCount(10 * MiB, 4 * MiB)).toBe(3);
    expect(objectCount(Number.MAX_SAFE_INTEGER, 256)).toBe(2 ** 45);
  });

  test.prop([fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), fc.integer({ min: 1, max: 2 ** 31 })])(
    'objectCount matches bigint arithmetic',
    (size, bs) => {
      const expected = (BigInt(size) + BigInt(bs) - 1n) / BigInt(bs);
      expect(BigInt(objectCount(size, bs))).toBe(expected);
    },
  );

  it('entriesPerMapBlock is blocksize / 128', () => {
    expect(entriesPerMapBlock(4 * MiB)).toBe(32768);
    expect(entriesPerMapBlock(256)).toBe(2);
    expect(() => entriesPerMapBlock(128)).toThrow(RangeError);
  });

  it('isValidBlocksize', () => {
    expect(isValidBlocksize(256)).toBe(true);
    expect(isValidBlocksize(4 * MiB)).toBe(true);
    expect(isValidBlocksize(128)).toBe(false);
    expect(isValidBlocksize(384)).toBe(false);
    expect(isValidBlocksize(2 ** 32)).toBe(false);
    expect(isValidBlocksize(512.5)).toBe(false);
  });

  it('map-block names are volume + _ + 16 lowercase hex digits', () => {
    expect(mapBlockName('myvol', 0)).toBe('myvol_0000000000000000');
    expect(mapBlockName('myvol', 255)).toBe('myvol_00000000000000ff');
  });

  it('entry placement: block id = floor(i*128/bs), offset = (i mod bs/128)*128', () => {
    expect(mapBlockLocation(0, 4 * MiB)).toEqual({ blockId: 0, offset: 0 });
    expect(mapBlockLocation(1, 4 * MiB)).toEqual({ blockId: 0, offset: 128 });
    expect(mapBlockLocation(32767, 4 * MiB)).toEqual({ blockId: 0, offset: 32767 * 128 });
    expect(mapBlockLocation(32768, 4 * MiB)).toEqual({ blockId: 1, offset: 0 });
    expect(mapBlockLocation(5, 256)).toEqual({ blockId: 2, offset: 128 });
  });

  test.prop([fc.integer({ min: 0, max: 2 ** 40 }), fc.integer({ min: 8, max: 31 })])(
    'placement agrees with the reference formula',
    (index, log2bs) => {
      const bs = 2 ** log2bs;
      const { blockId, offset } = mapBlockLocation(index, bs);
      expect(BigInt(blockId)).toBe((BigInt(index) * 128n) / BigInt(bs));
      expect(offset).toBe((index % (bs / 128)) * 128);
    },
  );
});

describe('intent record after the header', () => {
  it('golden bytes: renamed-from "old" at epoch 7, stored at offset 32', () => {
    const rec = encodeIntent({ kind: 'renamed-from', name: 'old', epoch: 7n });
    // "INTN"    kind len epoch (u64 BE)      "old"
    expect(rec.toString('hex')).toBe('494e544e' + '01' + '03' + '0000000000000007' + '6f6c64');
    const head = Buffer.alloc(MAX_HEADER_SIZE);
    const h = encodeHeaderV2({ size: 1, blocksize: 1024, flags: MapFlag.INCOMPLETE, epoch: 1n });
    Buffer.concat([h, rec]).copy(head);
    expect(decodeHeaderV2(head, VOL).flags).toBe(MapFlag.INCOMPLETE);
    expect(decodeIntent(head)).toEqual({ kind: 'renamed-from', name: 'old', epoch: 7n });
  });

  test.prop([
    fc.constantFrom('renamed-from' as const, 'renamed-to' as const),
    fc.stringMatching(/^[A-Za-z0-9_-]{1,123}$/),
    fc.bigInt({ min: 0n, max: UINT64_MAX }),
  ])('decode(header + encode(i)) == i', (kind, name, epoch) => {
    const h = encodeHeaderV2({ size: 0, blocksize: 4 * MiB, flags: MapFlag.DELETED, epoch: 1n });
    const stored = Buffer.concat([h, encodeIntent({ kind, name, epoch })]);
    expect(stored.length).toBeLessThanOrEqual(MAX_HEADER_SIZE);
    expect(decodeIntent(stored)).toEqual({ kind, name, epoch });
  });

  it('a header alone, zero fill, or stray bytes read as no intent', () => {
    const h = encodeHeaderV2({ size: 0, blocksize: 4 * MiB, flags: 0, epoch: 1n });
    expect(decodeIntent(h)).toBeNull();
    expect(decodeIntent(Buffer.concat([h, Buffer.alloc(480)]))).toBeNull();
    expect(decodeIntent(Buffer.concat([h, Buffer.alloc(480, 0xab)]))).toBeNull();
    const rec = encodeIntent({ kind: 'renamed-to', name: 'x', epoch: 1n });
    const unknownKind = Buffer.from(rec);
    unknownKind[4] = 9;
    expect(decodeIntent(Buffer.concat([h, unknownKind]))).toBeNull();
    const badName = Buffer.from(rec);
    badName[14] = 0x2f; // "/"
    expect(decodeIntent(Buffer.concat([h, badName]))).toBeNull();
    expect(decodeIntent(Buffer.concat([h, rec.subarray(0, rec.length - 1)]))).toBeNull();
  });

  it('refuses to encode a bad name, kind or epoch', () => {
    expect(() => encodeIntent({ kind: 'renamed-to', name: 'a/b', epoch: 1n })).toThrow(RangeError);
    expect(() => encodeIntent({ kind: 'renamed-to', name: 'a', epoch: -1n })).toThrow(RangeError);
    expect(() => encodeIntent({ kind: 'other' as 'renamed-to', name: 'a', epoch: 1n })).toThrow(RangeError);
  });
});
