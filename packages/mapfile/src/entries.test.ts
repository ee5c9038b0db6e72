import { ArchipelagoError } from '@archipelago/libxseg';
import { fc, test } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import { expectCorrupt } from './__fixtures__/corrupt.js';
import {
  dataObjectName,
  decodeEntriesV2,
  decodeEntryV2,
  ENTRY_V2_SIZE,
  encodeEntriesV2,
  encodeEntryV2,
  type MapEntry,
  ObjFlag,
  ZERO_BLOCK,
  ZERO_ENTRY,
  zeroRecords,
} from './index.js';

const VOL = 'entries-vol';
const NAME_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-'.split('');

/** Valid object names (not "." / ".." / the zero block). */
const objectName = fc
  .array(fc.constantFrom(...NAME_CHARS), { minLength: 1, maxLength: 123 })
  .map((cs) => cs.join(''))
  .filter((s) => s !== '.' && s !== '..' && s !== ZERO_BLOCK);
const entryArb: fc.Arbitrary<MapEntry> = fc.oneof(
  fc.record({ name: objectName, flags: fc.integer({ min: 0, max: 15 }) }),
  fc.constant({ name: ZERO_BLOCK, flags: ObjFlag.ZERO }),
);

/** A record built by hand: flags, u32 LE length, raw name bytes, zero padding. */
function rawRecord(flags: number, objectlen: number, name: string): Buffer {
  const b = Buffer.alloc(ENTRY_V2_SIZE);
  b[0] = flags;
  b.writeUInt32LE(objectlen, 1);
  b.write(name, 5, 'latin1');
  return b;
}

describe('v2 entry golden bytes', () => {
  it('a data object entry: u8 flags, u32 LITTLE-endian length, name, zero padding', () => {
    const name = dataObjectName('myvolume', 1n, 0);
    expect(name).toBe('myvolume_0000000000000001_0000000000000000'); // 42 = 0x2a chars
    const buf = encodeEntryV2({ name, flags: ObjFlag.WRITABLE | ObjFlag.ARCHIP });
    expect(buf.length).toBe(128);
    const expected =
      '03' + // flags WRITABLE|ARCHIP
      '2a000000' + // objectlen 42, little-endian
      Buffer.from(name, 'ascii').toString('hex') +
      '00'.repeat(123 - 42);
    expect(buf.toString('hex')).toBe(expected);
  });

  it('the zero block entry', () => {
    const buf = encodeEntryV2({ name: ZERO_BLOCK, flags: ObjFlag.ZERO });
    expect(buf.subarray(0, 5).toString('hex')).toBe('0440000000'); // ZERO, len 64 LE
    expect(buf.toString('latin1', 5, 69)).toBe(ZERO_BLOCK);
    expect(buf.subarray(69).equals(Buffer.alloc(59))).toBe(true);
  });

  it('a 123-character name fills the record with no terminator', () => {
    const name = 'x'.repeat(123);
    const buf = encodeEntryV2({ name, flags: 0 });
    expect(buf.subarray(0, 5).toString('hex')).toBe('007b000000');
    expect(buf.toString('latin1', 5)).toBe(name);
    expect(decodeEntryV2(buf, 0, VOL, 0)).toEqual({ name, flags: 0 });
  });

  it('writes into a given buffer at an offset and returns it, clearing old padding', () => {
    const into = Buffer.alloc(3 * 128, 0xee);
    const out = encodeEntryV2({ name: 'abc', flags: 8 }, into, 128);
    expect(out).toBe(into);
    expect(into.subarray(0, 128).every((b) => b === 0xee)).toBe(true);
    expect(into.subarray(128, 136).toString('hex')).toBe('0803000000616263');
    expect(into.subarray(136, 256).every((b) => b === 0)).toBe(true);
    expect(into.subarray(256).every((b) => b === 0xee)).toBe(true);
    encodeEntryV2({ name: ZERO_BLOCK, flags: 4 }, into, 0);
    expect(decodeEntryV2(into, 0, VOL, 0)).toEqual({ name: ZERO_BLOCK, flags: 4 });
    expect(into.subarray(69, 128).every((b) => b === 0)).toBe(true);
    expect(() => encodeEntryV2({ name: 'abc', flags: 0 }, into, 257)).toThrow(RangeError);
  });
});

describe('v2 entry round trip', () => {
  test.prop([entryArb, fc.integer({ min: 0, max: 1000 })])(
    'decodeEntryV2(encodeEntryV2(e)) == e',
    (e, index) => {
      const buf = encodeEntryV2(e);
      expect(decodeEntryV2(buf, 0, VOL, index)).toEqual(e);
    },
  );

  test.prop([fc.array(entryArb, { maxLength: 200 }), fc.integer({ min: 0, max: 2 ** 40 })])(
    'decodeEntriesV2(encodeEntriesV2(es)) == es, and matches per-entry encoding',
    (entries, first) => {
      const buf = encodeEntriesV2(entries);
      expect(buf.length).toBe(entries.length * 128);
      expect(decodeEntriesV2(buf, entries.length, VOL, first)).toEqual(entries);
      entries.forEach((e, i) => {
        expect(buf.subarray(i * 128, (i + 1) * 128).equals(encodeEntryV2(e))).toBe(true);
      });
    },
  );

  test.prop([fc.integer({ min: 0, max: 15 })])(
    'the zero-block name always carries ZERO and never WRITABLE',
    (flags) => {
      const expected = (flags | ObjFlag.ZERO) & ~ObjFlag.WRITABLE;
      expect(decodeEntryV2(encodeEntryV2({ name: ZERO_BLOCK, flags }), 0, VOL, 0).flags).toBe(expected);
      expect(decodeEntryV2(rawRecord(flags, 64, ZERO_BLOCK), 0, VOL, 0).flags).toBe(expected);
    },
  );

  it('decode masks the flag byte to 0xf', () => {
    expect(decodeEntryV2(rawRecord(0xf3, 3, 'abc'), 0, VOL, 0)).toEqual({ name: 'abc', flags: 3 });
  });

  it('decode ignores bytes after the name', () => {
    const b = rawRecord(1, 3, 'abcdef');
    expect(decodeEntryV2(b, 0, VOL, 0).name).toBe('abc');
  });

  it('decodeEntriesV2 reads only the first count records and ignores extra bytes', () => {
    const buf = Buffer.concat([encodeEntriesV2([{ name: 'a', flags: 0 }]), Buffer.alloc(300, 0xff)]);
    expect(decodeEntriesV2(buf, 1, VOL, 0)).toEqual([{ name: 'a', flags: 0 }]);
    expect(decodeEntriesV2(Buffer.alloc(0), 0, VOL, 0)).toEqual([]);
  });
});

describe('v2 entry encoding refuses bad input', () => {
  it('names that are empty, too long or use other characters -> EINVAL_NAME', () => {
    for (const name of ['', 'x'.repeat(124), 'a b', 'a/b', 'é', '.', '..']) {
      let caught: unknown;
      try {
        encodeEntryV2({ name, flags: 0 });
      } catch (e) {
        caught = e;
      }
      expect(ArchipelagoError.is(caught, 'EINVAL_NAME')).toBe(true);
    }
    expect(() =>
      encodeEntriesV2([
        { name: 'ok', flags: 0 },
        { name: 'no way', flags: 0 },
      ]),
    ).toThrow(/entry 1/);
  });

  it('flags outside 0..15 -> RangeError', () => {
    for (const flags of [-1, 16, 0x100, 1.5, Number.NaN]) {
      expect(() => encodeEntryV2({ name: 'abc', flags })).toThrow(RangeError);
    }
  });
});

describe('v2 entry corruption', () => {
  it('object name length > 123 -> ECORRUPT_MAP naming the volume and entry index', () => {
    for (const len of [124, 255, 0x01000000, 0xffffffff]) {
      const buf = Buffer.concat([
        encodeEntryV2({ name: 'good', flags: 0 }),
        rawRecord(0, len, 'x'.repeat(123)),
      ]);
      const err = expectCorrupt(() => decodeEntriesV2(buf, 2, VOL, 40), VOL, /entry 41/);
      expect(err.message).toMatch(/length/);
      expect(err.message).toContain(String(len));
      expect(err.details).toMatchObject({ volume: VOL, fault: 'bad-objectlen', index: 41, objectlen: len });
      expectCorrupt(() => decodeEntryV2(buf, 128, VOL, 7), VOL, /entry 7: object name length/);
    }
  });

  it('object name length 0 -> ECORRUPT_MAP', () => {
    const err = expectCorrupt(
      () => decodeEntryV2(Buffer.alloc(128), 0, VOL, 3),
      VOL,
      /entry 3: object name length 0/,
    );
    expect(err.details.fault).toBe('bad-objectlen');
  });

  it('truncated map block -> ECORRUPT_MAP', () => {
    const buf = encodeEntriesV2([
      { name: 'a', flags: 0 },
      { name: 'b', flags: 0 },
    ]).subarray(0, 200);
    const err = expectCorrupt(() => decodeEntriesV2(buf, 2, VOL, 0), VOL, /truncated map block/);
    expect(err.details.fault).toBe('truncated-map-block');
    expectCorrupt(() => decodeEntryV2(buf, 128, VOL, 1), VOL, /truncated map block/);
  });
});

describe('speed of whole-map encoding', () => {
  it('encodes and decodes a 262144-entry map (1 TiB at 4 MiB)', () => {
    const n = 262144;
    const entries: MapEntry[] = new Array(n);
    for (let i = 0; i < n; i++) {
      entries[i] =
        i % 4 === 0 ? { name: dataObjectName('myvolume', 3n, i), flags: 3 } : { name: ZERO_BLOCK, flags: 4 };
    }
    const t0 = performance.now();
    const buf = encodeEntriesV2(entries);
    const t1 = performance.now();
    const back = decodeEntriesV2(buf, n, VOL, 0);
    const t2 = performance.now();
    expect(back[0]).toEqual(entries[0]);
    expect(back[n - 1]).toEqual(entries[n - 1]);
    // Generous bounds: most of the time here is the kernel faulting in 32 MiB of fresh memory.
    expect(t1 - t0).toBeLessThan(2000);
    expect(t2 - t1).toBeLessThan(2000);
  });
});

describe('zero-entry fast paths', () => {
  const named = (i: number): MapEntry => ({ name: `vol_${i.toString(16)}`, flags: ObjFlag.WRITABLE });
  const plainZero = (): MapEntry => ({ name: ZERO_BLOCK, flags: ObjFlag.ZERO });

  test.prop([fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 1500 })])(
    'encode runs of zero entries exactly like one record at a time, and decode them back',
    (kinds) => {
      // 0 and 1: plain zero entries (shared or not); 2: a zero entry with other flags; 3: a name.
      const entries = kinds.map((k, i) =>
        k === 0
          ? ZERO_ENTRY
          : k === 1
            ? plainZero()
            : k === 2
              ? { name: ZERO_BLOCK, flags: ObjFlag.ARCHIP }
              : named(i),
      );
      const buf = encodeEntriesV2(entries);
      const one = Buffer.concat(entries.map((e) => encodeEntryV2(e)));
      expect(buf.equals(one)).toBe(true);
      const back = decodeEntriesV2(buf, entries.length, 'v', 0);
      expect(back).toEqual(
        entries.map((e) =>
          e.name === ZERO_BLOCK ? { ...e, flags: (e.flags | ObjFlag.ZERO) & ~ObjFlag.WRITABLE } : e,
        ),
      );
    },
  );

  it('decodes every plain zero record to the one shared, frozen ZERO_ENTRY', () => {
    const buf = encodeEntriesV2(Array.from({ length: 1300 }, (_, i) => (i === 700 ? named(i) : plainZero())));
    const back = decodeEntriesV2(buf, 1300, 'v', 0);
    expect(back[0]).toBe(ZERO_ENTRY);
    expect(back[1299]).toBe(ZERO_ENTRY);
    expect(back[700]).toEqual(named(700));
    expect(Object.isFrozen(ZERO_ENTRY)).toBe(true);
  });

  it('zeroRecords(n) is what n zero entries encode to, for any n', () => {
    for (const n of [0, 1, 511, 512, 513, 40_000]) {
      expect(zeroRecords(n).equals(encodeEntriesV2(Array.from({ length: n }, plainZero)))).toBe(true);
    }
  });

  it('decodes an unaligned buffer (no word view) the same way', () => {
    const entries = [plainZero(), named(1), plainZero()];
    const padded = Buffer.alloc(3 * 128 + 1);
    encodeEntriesV2(entries).copy(padded, 1);
    expect(decodeEntriesV2(padded.subarray(1), 3, 'v', 0)).toEqual(entries);
  });
});
