import { ArchipelagoError } from '@archipelago/libxseg';
import { describe, expect, it } from 'vitest';
import { formatRate, formatSize, formatSizeExact, parseSize } from './size.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (ArchipelagoError.isInstance(e)) return e.code;
    throw e;
  }
  return 'no error';
}

describe('parseSize', () => {
  it('reads a bare number as MiB, as the original vlmc did', () => {
    expect(parseSize('10')).toBe(10 * MiB);
    expect(parseSize('1')).toBe(MiB);
  });

  it.each([
    ['4096B', 4096],
    ['4096b', 4096],
    ['1K', KiB],
    ['1k', KiB],
    ['1KB', KiB],
    ['1KiB', KiB],
    ['1kib', KiB],
    ['512M', 512 * MiB],
    ['512MiB', 512 * MiB],
    ['1G', GiB],
    ['1g', GiB],
    ['10GiB', 10 * GiB],
    ['1T', TiB],
    ['1TiB', TiB],
    ['1P', 1024 * TiB],
    ['1.5G', 1.5 * GiB],
    ['0.5M', MiB / 2],
    [' 2 G ', 2 * GiB],
  ])('%s = %d bytes', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  it.each(['1X', '', 'G', '-1G', '1e3', '1,5G', '1GG', '0', '0G', '1.5B', '0.1K', 'ten', '99999999999P'])(
    'rejects %j with EINVAL_SIZE naming the text',
    (text) => {
      expect(codeOf(() => parseSize(text))).toBe('EINVAL_SIZE');
      try {
        parseSize(text);
      } catch (e) {
        expect((e as Error).message).toContain(`"${text}"`);
      }
    },
  );
});

describe('formatSize', () => {
  it.each([
    [0, '0 B'],
    [100, '100 B'],
    [KiB, '1 KiB'],
    [1.5 * MiB, '1.5 MiB'],
    [10 * GiB, '10 GiB'],
    [TiB, '1 TiB'],
    [64 * MiB + 1000, '64 MiB'],
  ])('%d → %s', (bytes, text) => {
    expect(formatSize(bytes)).toBe(text);
  });

  it('round-trips through parseSize for whole units', () => {
    for (const s of ['1 KiB', '3 MiB', '7 GiB', '2 TiB'])
      expect(formatSize(parseSize(s.replace(' ', '')))).toBe(s);
  });
});

describe('formatSizeExact', () => {
  it.each([
    [100, '100 B'],
    [4096, '4 KiB'],
    [4097, '4097 B, about 4 KiB'],
    [1.5 * MiB, '1.5 MiB'],
    [10 * GiB, '10 GiB'],
    [GiB + 1, '1073741825 B, about 1 GiB'],
    [64 * MiB + 1000, '67109864 B, about 64 MiB'],
    [1024 * TiB, '1 PiB'],
  ])('%d → %s (never rounded without the exact bytes)', (bytes, text) => {
    expect(formatSizeExact(bytes)).toBe(text);
  });
});

describe('formatRate', () => {
  it('gives MiB/s with one decimal', () => {
    expect(formatRate(10 * MiB, 2)).toBe('5.0 MiB/s');
    expect(formatRate(1, 0)).toBe('-- MiB/s');
  });
});
