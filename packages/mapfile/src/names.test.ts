import { ArchipelagoError } from '@archipelago/libxseg';
import { fc, test } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import {
  dataObjectName,
  hex16,
  isValidObjectName,
  mapBlockName,
  UINT64_MAX,
  validateVolumeName,
} from './index.js';

function nameError(name: string): ArchipelagoError {
  try {
    validateVolumeName(name);
  } catch (e) {
    expect(ArchipelagoError.is(e, 'EINVAL_NAME')).toBe(true);
    return e as ArchipelagoError;
  }
  throw new Error(`"${name}" was accepted`);
}

describe('validateVolumeName', () => {
  it('accepts ordinary names, including short ones (no 6-character minimum)', () => {
    for (const n of [
      'a',
      'vm1',
      'myvolume',
      'My.Vol_1-2',
      'x'.repeat(82),
      'a-',
      '_x',
      'lock',
      'x_lock2',
      'archip',
    ]) {
      expect(() => validateVolumeName(n)).not.toThrow();
    }
  });

  it('length 1..82', () => {
    expect(nameError('').message).toMatch(/1 to 82 characters/);
    const err = nameError('x'.repeat(83));
    expect(err.message).toMatch(/1 to 82 characters/);
    expect(err.details.rule).toBe('length');
  });

  it('only [A-Za-z0-9._-]', () => {
    for (const n of ['a b', 'a/b', 'a\\b', 'vol:1', 'véol', 'a\0b', 'tab\t']) {
      const err = nameError(n);
      expect(err.message).toMatch(/letters, digits/);
      expect(err.details.rule).toBe('charset');
    }
  });

  it('not "." or ".." and not starting with "-"', () => {
    expect(nameError('.').details.rule).toBe('dot');
    expect(nameError('..').details.rule).toBe('dot');
    expect(nameError('-rf').message).toMatch(/must not start with '-'/);
  });

  it('no "_lock" suffix', () => {
    const err = nameError('myvol_lock');
    expect(err.message).toMatch(/_lock/);
    expect(err.details.rule).toBe('lock-suffix');
  });

  it('no "_<16 hex>" tail (would collide with map-block and data-object names)', () => {
    const err = nameError('myvol_0000000000000001');
    expect(err.message).toMatch(/16 hex digits/);
    expect(nameError(mapBlockName('v', 3)).details.rule).toBe('hex-suffix');
    expect(nameError(dataObjectName('v', 1n, 2)).details.rule).toBe('hex-suffix');
    // Only '_' + exactly 16 lowercase hex digits at the very end is reserved.
    expect(() => validateVolumeName('myvol_000000000000000A')).not.toThrow();
    expect(() => validateVolumeName('myvol_000000000000000')).not.toThrow();
    expect(() => validateVolumeName('myvol_00000000000000000')).not.toThrow();
  });

  it('no "archip_" prefix', () => {
    const err = nameError('archip_myvol');
    expect(err.message).toMatch(/archip_/);
    expect(err.details.rule).toBe('archip-prefix');
  });

  test.prop([fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,81}$/)])(
    'valid names are valid object names',
    (n) => {
      fc.pre(!n.endsWith('_lock') && !/_[0-9a-f]{16}$/.test(n) && !n.startsWith('archip_'));
      validateVolumeName(n);
      expect(isValidObjectName(n)).toBe(true);
      expect(isValidObjectName(dataObjectName(n, 0n, 0))).toBe(true);
    },
  );
});

describe('isValidObjectName', () => {
  it('1..123 characters of [A-Za-z0-9._-], not "." or ".."', () => {
    expect(isValidObjectName('a')).toBe(true);
    expect(isValidObjectName('x'.repeat(123))).toBe(true);
    expect(isValidObjectName(`archip_${'ab'.repeat(32)}`)).toBe(true);
    expect(isValidObjectName('.hidden')).toBe(true);
    expect(isValidObjectName('')).toBe(false);
    expect(isValidObjectName('x'.repeat(124))).toBe(false);
    expect(isValidObjectName('.')).toBe(false);
    expect(isValidObjectName('..')).toBe(false);
    expect(isValidObjectName('a/b')).toBe(false);
    expect(isValidObjectName('a b')).toBe(false);
  });
});

describe('hex16 and data-object names', () => {
  it('hex16 is 16 lowercase hex digits of a u64', () => {
    expect(hex16(0)).toBe('0000000000000000');
    expect(hex16(255)).toBe('00000000000000ff');
    expect(hex16(0xabcdefn)).toBe('0000000000abcdef');
    expect(hex16(UINT64_MAX)).toBe('ffffffffffffffff');
    expect(hex16(Number.MAX_SAFE_INTEGER)).toBe('001fffffffffffff');
    expect(() => hex16(-1)).toThrow(RangeError);
    expect(() => hex16(1.5)).toThrow(RangeError);
    expect(() => hex16(2 ** 53)).toThrow(RangeError);
    expect(() => hex16(-1n)).toThrow(RangeError);
    expect(() => hex16(UINT64_MAX + 1n)).toThrow(RangeError);
  });

  test.prop([fc.bigInt({ min: 0n, max: UINT64_MAX })])('hex16 parses back', (n) => {
    const h = hex16(n);
    expect(h).toMatch(/^[0-9a-f]{16}$/);
    expect(BigInt(`0x${h}`)).toBe(n);
  });

  it('dataObjectName follows the reference example', () => {
    expect(dataObjectName('myvolume', 1n, 0)).toBe('myvolume_0000000000000001_0000000000000000');
    expect(dataObjectName('v', 0x10n, 0xabc)).toBe('v_0000000000000010_0000000000000abc');
    // The longest volume name still gives a name that fits a v2 entry (82 + 7 legacy room + 34 = 123).
    expect(dataObjectName('x'.repeat(89), UINT64_MAX, 1)).toHaveLength(123);
  });
});
