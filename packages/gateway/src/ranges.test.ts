import { describe, expect, it } from 'vitest';
import { checkAccount, checkContainer, checkObject, NameError, objectKey } from './names.js';
import { MAX_RANGES, parseRange } from './ranges.js';

describe('parseRange', () => {
  it('parses first-last, open, suffix and lists, clamped to the size', () => {
    expect(parseRange('bytes=0-9', 100)).toEqual([{ start: 0, end: 9 }]);
    expect(parseRange('bytes=90-', 100)).toEqual([{ start: 90, end: 99 }]);
    expect(parseRange('bytes=-10', 100)).toEqual([{ start: 90, end: 99 }]);
    expect(parseRange('bytes=-1000', 100)).toEqual([{ start: 0, end: 99 }]);
    expect(parseRange('bytes=50-5000', 100)).toEqual([{ start: 50, end: 99 }]);
    expect(parseRange('bytes= 0-0 , 5-6', 100)).toEqual([
      { start: 0, end: 0 },
      { start: 5, end: 6 },
    ]);
  });

  it('says unsatisfiable when no range overlaps, and ignores malformed headers', () => {
    expect(parseRange('bytes=100-', 100)).toBe('unsatisfiable');
    expect(parseRange('bytes=-0', 100)).toBe('unsatisfiable');
    expect(parseRange('bytes=100-200,300-', 100)).toBe('unsatisfiable');
    for (const bad of [
      'bytes=5-1',
      'bytes=a-b',
      'bytes=-',
      'items=0-1',
      'bytes=',
      'bytes=1-2-3',
      'bytes=99999999999999999999-',
    ]) {
      expect(parseRange(bad, 100), bad).toBeNull();
    }
    expect(parseRange(undefined, 100)).toBeNull();
    const many = `bytes=${Array.from({ length: MAX_RANGES + 1 }, (_, i) => `${i}-${i}`).join(',')}`;
    expect(parseRange(many, 1000)).toBeNull();
  });
});

describe('names', () => {
  it('accepts Swift-style names and refuses hostile ones', () => {
    expect(checkAccount('test')).toBe('test');
    expect(checkContainer('my container ☃')).toBe('my container ☃');
    expect(checkObject('a/b/c.txt')).toBe('a/b/c.txt');
    for (const bad of ['', '..', '-x', 'a/b', 'x'.repeat(65)])
      expect(() => checkAccount(bad), bad).toThrow(NameError);
    for (const bad of ['', '.', '..', 'a/b', 'x\u0000', 'x'.repeat(257)])
      expect(() => checkContainer(bad), bad).toThrow(NameError);
    for (const bad of ['', '../x', 'a/./b', 'a/..', 'x\n', '\ud800', 'x'.repeat(1025)]) {
      expect(() => checkObject(bad), JSON.stringify(bad)).toThrow(NameError);
    }
  });

  it('names records by digests: fixed length, blocker-safe, distinct per name', () => {
    const a = objectKey('acct', 'c', 'x'.repeat(1024));
    expect(a).toMatch(/^gwo\.[0-9a-f]{32}\.[0-9a-f]{64}$/);
    expect(a.length).toBe(101);
    expect(objectKey('acct', 'c', 'o1')).not.toBe(objectKey('acct', 'c', 'o2'));
    // The NUL separator keeps ("a","bc") and ("ab","c") apart.
    expect(objectKey('acct', 'a', 'bc')).not.toBe(objectKey('acct', 'ab', 'c'));
  });
});
