import { describe, expect, it } from 'vitest';
import { breakInput, decodeLockInfo, getInfoInput, LOCK_FLAG_MUST_RENEW, lockInput } from './cls-lock.js';

describe('cls_lock encoding', () => {
  it('encodes lock.lock as cls_lock_lock_op v1: name, type, cookie, tag, description, duration, flags', () => {
    const b = lockInput({
      name: 'RadosLock',
      cookie: 'c#1',
      description: 'd',
      durationMs: 1500,
      flags: LOCK_FLAG_MUST_RENEW,
    });
    expect(b.subarray(0, 2)).toEqual(Buffer.from([1, 1]));
    expect(b.readUInt32LE(2)).toBe(b.length - 6);
    const body = Buffer.concat([
      Buffer.from([9, 0, 0, 0]),
      Buffer.from('RadosLock'),
      Buffer.from([1]), // LOCK_EXCLUSIVE
      Buffer.from([3, 0, 0, 0]),
      Buffer.from('c#1'),
      Buffer.from([0, 0, 0, 0]), // tag
      Buffer.from([1, 0, 0, 0]),
      Buffer.from('d'),
      Buffer.from([1, 0, 0, 0, 0x00, 0x65, 0xcd, 0x1d]), // 1 s + 500,000,000 ns
      Buffer.from([2]),
    ]);
    expect(b.subarray(6)).toEqual(body);
  });

  it('encodes break_lock with the entity name (type, number) and get_info with the lock name', () => {
    const b = breakInput('L', 'client.4125', 'k');
    expect(b.subarray(6)).toEqual(
      Buffer.from([1, 0, 0, 0, 0x4c, 0x08, 0x1d, 0x10, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x6b]),
    );
    expect(getInfoInput('L')).toEqual(Buffer.from([1, 1, 5, 0, 0, 0, 1, 0, 0, 0, 0x4c]));
    expect(() => breakInput('L', 'nobody', 'k')).toThrow(TypeError);
  });

  it('decodes a get_info reply as a Ceph 16 OSD sends it (address and description skipped)', () => {
    // lock RadosLock held by client.4125, cookie "ck#1", no expiry, description "desc here"
    const hex =
      '01015e00000001000000010111000000081d1000000000000004000000636b233101013800000000000000000000000101011c00000001000000d863b03210000000020000007f0000010000000000000000090000006465736320686572650100000000';
    expect(decodeLockInfo(Buffer.from(hex, 'hex'))).toEqual({
      lockers: [{ client: 'client.4125', cookie: 'ck#1', expires: null }],
      exclusive: true,
      tag: '',
    });
    expect(() => decodeLockInfo(Buffer.from(hex.slice(0, 60), 'hex'))).toThrow(RangeError);
  });
});
