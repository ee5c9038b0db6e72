import { createHash, randomBytes } from 'node:crypto';
import { fc, test } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import { merkleRoot, pithosBlockHash, stripTrailingZeros, ZERO_BLOCK } from './index.js';

const sha256hex = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

/** Reference strip: the slow obvious loop. */
function refStrip(b: Uint8Array): number {
  let n = b.length;
  while (n > 0 && b[n - 1] === 0) n--;
  return n;
}

describe('stripTrailingZeros', () => {
  it('returns a subarray view, no copy', () => {
    const b = Buffer.from([1, 2, 0, 3, 0, 0]);
    const s = stripTrailingZeros(b);
    expect(s.length).toBe(4);
    expect(s.buffer).toBe(b.buffer);
    expect(s.byteOffset).toBe(b.byteOffset);
    expect(stripTrailingZeros(new Uint8Array(0)).length).toBe(0);
    expect(stripTrailingZeros(new Uint8Array(100)).length).toBe(0);
  });

  test.prop([
    fc.uint8Array({ maxLength: 300 }),
    fc.integer({ min: 0, max: 200_000 }),
    fc.integer({ min: 0, max: 15 }),
    fc.integer({ min: 0, max: 15 }),
  ])('agrees with a byte loop at any alignment and zero-run length', (data, zeros, lead, trail) => {
    // Place the block at an arbitrary offset inside a larger buffer with junk around it.
    const backing = new Uint8Array(lead + data.length + zeros + trail).fill(0xab);
    backing.set(data, lead);
    backing.fill(0, lead + data.length, lead + data.length + zeros);
    const block = backing.subarray(lead, lead + data.length + zeros);
    expect(stripTrailingZeros(block).length).toBe(refStrip(block));
  });

  it('finds a single non-zero byte anywhere in a 4 MiB block', () => {
    const block = Buffer.alloc(4 << 20);
    for (const pos of [0, 1, 7, 8, 4095, 4096, 65535, 65536, 65537, (4 << 20) - 65537, (4 << 20) - 1]) {
      block.fill(0);
      block[pos] = 0x80;
      expect(stripTrailingZeros(block).length).toBe(pos + 1);
      expect(stripTrailingZeros(block.subarray(1)).length).toBe(pos);
    }
  });
});

describe('pithosBlockHash', () => {
  it('all-zero and empty blocks hash to the zero block', () => {
    expect(sha256hex('')).toBe(ZERO_BLOCK);
    expect(pithosBlockHash(new Uint8Array(0))).toBe(ZERO_BLOCK);
    expect(pithosBlockHash(Buffer.alloc(4 << 20))).toBe(ZERO_BLOCK);
  });

  it('known value: "abc" with and without trailing zeros', () => {
    const abc = 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad';
    expect(pithosBlockHash(Buffer.from('abc'))).toBe(abc);
    expect(pithosBlockHash(Buffer.concat([Buffer.from('abc'), Buffer.alloc(4096)]))).toBe(abc);
  });

  test.prop([fc.integer({ min: 0, max: 20_000 }), fc.integer({ min: 0, max: 100_000 })], { numRuns: 50 })(
    'equals sha256 of the block without its trailing zeros',
    (dataLen, zeros) => {
      const data = randomBytes(dataLen);
      if (dataLen > 0 && data[dataLen - 1] === 0) data[dataLen - 1] = 1;
      const block = Buffer.concat([data, Buffer.alloc(zeros)]);
      expect(pithosBlockHash(block)).toBe(sha256hex(data));
    },
  );

  it('a random 4 MiB block with a zero tail', () => {
    const block = randomBytes(4 << 20);
    block.fill(0, 3_000_001);
    block[3_000_000] = 9;
    expect(pithosBlockHash(block)).toBe(sha256hex(block.subarray(0, 3_000_001)));
  });
});

/** Independent Merkle root: the Pithos algorithm written out step by step with Buffers. */
function refMerkle(hexes: string[]): string {
  if (hexes.length === 0) return sha256hex('');
  if (hexes.length === 1) return hexes[0]!;
  let size = 2;
  while (size < hexes.length) size *= 2;
  let level: Buffer[] = hexes.map((h) => Buffer.from(h, 'hex'));
  while (level.length < size) level.push(Buffer.alloc(32));
  while (level.length > 1) {
    const next: Buffer[] = [];
    for (let i = 0; i < level.length; i += 2) {
      next.push(
        createHash('sha256')
          .update(Buffer.concat([level[i]!, level[i + 1]!]))
          .digest(),
      );
    }
    level = next;
  }
  return level[0]!.toString('hex');
}

describe('merkleRoot', () => {
  const leaves = Array.from({ length: 9 }, (_, i) => sha256hex(`block ${i}`));

  it.each([0, 1, 2, 3, 5])('%i hashes match the straightforward computation', (n) => {
    const hs = leaves.slice(0, n);
    expect(merkleRoot(hs)).toBe(refMerkle(hs));
  });

  it('spelled out by hand for 0, 1, 2 and 3 leaves', () => {
    const raw = (h: string) => Buffer.from(h, 'hex');
    const H = (...parts: Buffer[]) => createHash('sha256').update(Buffer.concat(parts)).digest();
    const [a, b, c] = [leaves[0]!, leaves[1]!, leaves[2]!];
    expect(merkleRoot([])).toBe(ZERO_BLOCK);
    expect(merkleRoot([a])).toBe(a);
    expect(merkleRoot([a, b])).toBe(H(raw(a), raw(b)).toString('hex'));
    const zero = Buffer.alloc(32); // padding leaves are zero bytes, not sha256('')
    expect(merkleRoot([a, b, c])).toBe(H(H(raw(a), raw(b)), H(raw(c), zero)).toString('hex'));
  });

  it('returns lowercase hex even for uppercase input', () => {
    const up = leaves.slice(0, 3).map((h) => h.toUpperCase());
    expect(merkleRoot(up)).toBe(refMerkle(leaves.slice(0, 3)));
    expect(merkleRoot([up[0]!])).toBe(leaves[0]);
  });

  test.prop([fc.array(fc.uint8Array({ minLength: 32, maxLength: 32 }), { maxLength: 70 })])(
    'any count agrees with the reference',
    (ds) => {
      const hs = ds.map((d) => Buffer.from(d).toString('hex'));
      expect(merkleRoot(hs)).toBe(refMerkle(hs));
    },
  );

  it('rejects malformed hashes', () => {
    expect(() => merkleRoot(['abc', leaves[0]!])).toThrow(TypeError);
    expect(() => merkleRoot(['z'.repeat(64), leaves[0]!])).toThrow(TypeError);
  });
});
