import { describe, expect, it } from 'vitest';
import { ByteQueue } from './byte-queue.js';

describe('ByteQueue', () => {
  it('returns a zero-copy slice when the bytes lie in one chunk', () => {
    const q = new ByteQueue();
    const chunk = Buffer.from('abcdefgh');
    q.push(chunk);
    const t = q.take(3);
    expect(t.toString()).toBe('abc');
    expect(t.buffer).toBe(chunk.buffer); // same memory
    expect(q.length).toBe(5);
  });

  it('copies exactly once across chunk boundaries and consumes precisely', () => {
    const q = new ByteQueue();
    for (const s of ['ab', 'cde', '', 'f', 'ghij']) q.push(Buffer.from(s));
    expect(q.length).toBe(10);
    expect(q.take(4).toString()).toBe('abcd');
    expect(q.take(1).toString()).toBe('e');
    expect(q.skip(2)).toBe(2);
    expect(q.take(3).toString()).toBe('hij');
    expect(q.length).toBe(0);
    expect(q.skip(5)).toBe(0);
    expect(() => q.take(1)).toThrow(RangeError);
  });

  it('stays correct over many small chunks (compaction)', () => {
    const q = new ByteQueue();
    const all: number[] = [];
    for (let i = 0; i < 1000; i++) {
      q.push(Buffer.from([i & 0xff, (i >> 8) & 0xff]));
      all.push(i & 0xff, (i >> 8) & 0xff);
    }
    const out: number[] = [];
    while (q.length > 0) out.push(...q.take(Math.min(q.length, 7)));
    expect(out).toEqual(all);
  });
});
