import { describe, expect, it } from 'vitest';
import {
  decodeClonePayload,
  decodeInfoReply,
  decodeMapReply,
  decodeTargetPayload,
  encodeClonePayload,
  encodeInfoReply,
  encodeMapReply,
  encodeTargetPayload,
  Op,
  opName,
  PAYLOAD,
} from './protocol.js';

describe('protocol layouts', () => {
  it('keeps the original op numbers', () => {
    expect([Op.READ, Op.WRITE, Op.MAPR, Op.MAPW, Op.SNAPSHOT, Op.UPDATE]).toEqual([1, 2, 12, 13, 16, 21]);
    expect(opName(Op.CLONE)).toBe('X_CLONE');
    expect(opName(99)).toBe('X_UNKNOWN(99)');
  });

  it('encodes the clone payload with targetlen at 256 and size at 264', () => {
    const b = encodeClonePayload('snap', 4096n);
    expect(b.length).toBe(PAYLOAD.clone);
    expect(b.toString('latin1', 0, 4)).toBe('snap');
    expect(b.readUInt32LE(256)).toBe(4);
    expect(b.readBigUInt64LE(264)).toBe(4096n);
    expect(decodeClonePayload(b)).toEqual({ source: 'snap', size: 4096n });
  });

  it('round-trips map replies (280-byte segments) and rejects a lying count', () => {
    const segs = [
      { target: 'v_0000000000000001_0000000000000000', flags: 0, offset: 10, size: 20 },
      { target: 'e3b0', flags: 2, offset: 0, size: 4194304 },
    ];
    const b = encodeMapReply(segs);
    expect(b.length).toBe(8 + 2 * 280);
    expect(decodeMapReply(b)).toEqual(segs);
    b.writeUInt32LE(3, 0);
    expect(() => decodeMapReply(b)).toThrow(RangeError);
  });

  it('round-trips target and info payloads and refuses oversized targets', () => {
    expect(decodeTargetPayload(encodeTargetPayload('vol'))).toBe('vol');
    expect(decodeInfoReply(encodeInfoReply(123n))).toBe(123n);
    expect(() => encodeTargetPayload('x'.repeat(257))).toThrow(RangeError);
    const bad = encodeTargetPayload('vol');
    bad.writeUInt32LE(999, 256);
    expect(() => decodeTargetPayload(bad)).toThrow(RangeError);
  });
});
