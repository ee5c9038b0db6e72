import { describe, expect, it } from 'vitest';
import { decodeRbdDiff, RBD_DIFF_V1_HEADER, type RbdDiffRecord, RbdDiffWriter } from './rbd-diff.js';

async function* chunks(b: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

async function decode(b: Buffer, chunk = 7, maxPiece?: number): Promise<RbdDiffRecord[]> {
  const out: RbdDiffRecord[] = [];
  for await (const r of decodeRbdDiff(chunks(b, chunk), maxPiece ? { maxPiece } : {})) out.push(r);
  return out;
}

async function failure(b: Buffer): Promise<{ message: string; offset: unknown }> {
  try {
    await decode(b);
  } catch (e) {
    const err = e as Error & { code?: string; details?: { offset?: unknown } };
    expect(err.code).toBe('EINVAL');
    return { message: err.message, offset: err.details?.offset };
  }
  throw new Error('decoded a bad stream');
}

/** A stream as rbd export-diff writes it: from s1 to s2, 1 MiB image, one write, one zero. */
function sample(): Buffer {
  const w = new RbdDiffWriter();
  const data = Buffer.from('hello, ceph');
  return Buffer.concat([
    w.from('s1'),
    w.to('s2'),
    w.imageSize(1 << 20),
    w.write(4096, data.length),
    data,
    w.zero(8192, 4096),
    w.end(),
  ]);
}

describe('RBD diff v1 codec', () => {
  it('encodes the layout of doc/dev/rbd-diff.rst byte for byte', () => {
    const b = sample();
    expect(b.subarray(0, 12).toString('latin1')).toBe(RBD_DIFF_V1_HEADER);
    expect(b.subarray(12, 19).toString('hex')).toBe(`66${'02000000'}${Buffer.from('s1').toString('hex')}`);
    expect(b[19]).toBe(0x74);
    expect(b[26]).toBe(0x73);
    expect(b.readBigUInt64LE(27)).toBe(1048576n);
    expect(b[35]).toBe(0x77);
    expect(b.readBigUInt64LE(36)).toBe(4096n);
    expect(b.readBigUInt64LE(44)).toBe(11n);
    expect(b.subarray(52, 63).toString()).toBe('hello, ceph');
    expect(b[63]).toBe(0x7a);
    expect(b[b.length - 1]).toBe(0x65);
    expect(b.length).toBe(63 + 17 + 1);
  });

  it('decodes what it encodes, whatever the chunking; write data comes in pieces', async () => {
    const b = sample();
    for (const c of [1, 3, 64, 1000]) {
      expect(await decode(b, c)).toEqual([
        { type: 'from', name: 's1', at: 12 },
        { type: 'to', name: 's2', at: 19 },
        { type: 'size', size: 1048576, at: 26 },
        { type: 'write', offset: 4096, data: Buffer.from('hello, ceph'), at: 35 },
        { type: 'zero', offset: 8192, length: 4096, at: 63 },
        { type: 'end', at: 80 },
      ]);
    }
    const pieces = (await decode(b, 5, 4)).filter((r) => r.type === 'write');
    expect(
      pieces.map((p) => [p.type === 'write' && p.offset, p.type === 'write' && p.data.toString()]),
    ).toEqual([
      [4096, 'hell'],
      [4100, 'o, c'],
      [4104, 'eph'],
    ]);
    // The shortest stream: header and end.
    expect(await decode(new RbdDiffWriter().end())).toEqual([{ type: 'end', at: 12 }]);
  });

  it('every cut of a stream is a clear "truncated" error naming where it ends', async () => {
    const b = sample();
    for (let n = 0; n < b.length; n++) {
      const f = await failure(b.subarray(0, n));
      expect(f.message).toMatch(/truncated: the stream ends at byte \d+/);
      expect(f.offset).toBe(n);
    }
  });

  it('refuses a wrong header, a v2 stream, an unknown tag, a length past the end, trailing data', async () => {
    const b = sample();
    expect((await failure(Buffer.concat([Buffer.from('rbd diff v3\n'), b.subarray(12)]))).message).toMatch(
      /not an RBD diff v1 stream: the header at byte 0 is "rbd diff v3\\n"/,
    );
    expect((await failure(Buffer.from('rbd image v2\nxxxx'))).message).toMatch(/not an RBD diff v1 stream/);
    expect((await failure(Buffer.concat([Buffer.from('rbd diff v2\n'), b.subarray(12)]))).message).toMatch(
      /v2 stream.*only v1 is supported/,
    );
    const tag = Buffer.from(b);
    tag[63] = 0x78; // 'x' where the 'z' record was
    expect(await failure(tag)).toEqual({
      message: 'RBD diff stream: unknown record tag 0x78 at byte 63 (expected one of f t s w z e)',
      offset: 63,
    });
    const long = Buffer.from(b);
    long.writeBigUInt64LE(1000n, 44); // the 'w' claims 1000 data bytes; the stream has 29 after it
    expect((await failure(long)).message).toMatch(
      /truncated: the stream ends at byte 81, inside the 1000 data bytes of record 'w' at byte 35/,
    );
    const past = Buffer.from(b);
    past.writeBigUInt64LE(1048576n, 64); // the 'z' starts at the image's end
    expect((await failure(past)).message).toMatch(
      /record 'z' at byte 63 covers 1048576\+4096, past the image size 1048576/,
    );
    expect(await failure(Buffer.concat([b, Buffer.from('e')]))).toEqual({
      message: "RBD diff stream: data after the end record: byte 81 follows the 'e' at byte 80",
      offset: 81,
    });
  });

  it('refuses records out of place: metadata after data, a repeated record, a huge name', async () => {
    const w = new RbdDiffWriter();
    const zero = Buffer.concat([w.zero(0, 10), w.end()]);
    const meta = new RbdDiffWriter().imageSize(100).subarray(12);
    const after = Buffer.concat([zero.subarray(0, zero.length - 1), meta, Buffer.from('e')]);
    expect((await failure(after)).message).toMatch(/metadata record 's' at byte 29 after data records/);
    const w2 = new RbdDiffWriter();
    const twice = Buffer.concat([w2.imageSize(10), w2.imageSize(20), w2.end()]);
    expect((await failure(twice)).message).toMatch(/a second record 's' at byte 21/);
    const huge = Buffer.concat([Buffer.from(RBD_DIFF_V1_HEADER), Buffer.from([0x66, 0, 0, 1, 0])]);
    expect((await failure(huge)).message).toMatch(/is 65536 bytes long/);
    expect(() => new RbdDiffWriter().end().length).not.toThrow();
    const w3 = new RbdDiffWriter();
    w3.imageSize(10);
    expect(() => w3.write(8, 4)).toThrow(RangeError);
  });
});
