import { describe, expect, it } from 'vitest';
import { DEFAULT_SPEC, formatSpec, parseSpec } from './spec.js';

describe('parseSpec', () => {
  it('reads dynports before nr_ports, as the original parser does', () => {
    expect(parseSpec('posix:archipelago:1024:2048:512:12')).toEqual({
      type: 'posix',
      name: 'archipelago',
      dynports: 1024,
      nrPorts: 2048,
      sizeMiB: 512,
      pageShift: 12,
    });
  });
  it('fills missing and empty fields with defaults', () => {
    expect(parseSpec('posix:archipelago:')).toEqual({ ...DEFAULT_SPEC, name: 'archipelago' });
    expect(parseSpec('')).toEqual(DEFAULT_SPEC);
    expect(parseSpec('posix:x::256')).toMatchObject({ dynports: 64, nrPorts: 256 });
    expect(formatSpec(DEFAULT_SPEC)).toBe('posix:globalxseg:64:128:256:12');
  });
  it('rejects what the segment cannot be', () => {
    expect(() => parseSpec('pthread:x')).toThrow(/only 'posix'/);
    expect(() => parseSpec('posix:x:128:64')).toThrow(/dynports:nr_ports/);
    expect(() => parseSpec('posix:x:1:2:3:4:5')).toThrow(/more than 6/);
    expect(() => parseSpec('posix:x:a')).toThrow(/not a number/);
    expect(() => parseSpec('posix:a/b')).toThrow(expect.objectContaining({ code: 'EINVAL_NAME' }));
  });
});
