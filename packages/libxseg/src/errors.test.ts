import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ArchipelagoError, describeError, ERROR_CODES, fromSystemError } from './errors.js';

describe('error registry', () => {
  it('documents every code in docs/errors.md and nothing else', () => {
    const doc = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');
    const documented = [...doc.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual(Object.keys(ERROR_CODES).sort());
  });

  it('recognises errors across package copies by marker, not instanceof', () => {
    const e = new ArchipelagoError('ELOCKED', 'held', { details: { owner: 'h_1' } });
    const copy = Object.assign(Object.create(Error.prototype), e);
    Object.defineProperty(copy, Symbol.for('archipelago.error'), { value: true });
    expect(ArchipelagoError.isInstance(copy)).toBe(true);
    expect(ArchipelagoError.is(e, 'ELOCKED')).toBe(true);
    expect(ArchipelagoError.is(new Error('x'), 'ELOCKED')).toBe(false);
    expect(JSON.parse(JSON.stringify(e))).toEqual({
      code: 'ELOCKED',
      message: 'held',
      details: { owner: 'h_1' },
    });
  });

  it('maps storage-full system errors to ENOSPC and others to EIO, keeping the cause', () => {
    const full = Object.assign(new Error('disk full'), { code: 'ENOSPC' });
    expect(fromSystemError(full, 'write x')).toMatchObject({ code: 'ENOSPC', cause: full });
    expect(fromSystemError(new Error('boom'), 'read y').code).toBe('EIO');
  });
});

describe('describeError', () => {
  it('reports an Archipelago error as it is, on one line', () => {
    const e = new ArchipelagoError('ELOCKED', 'held by\n  h_1', { details: { owner: 'h_1' } });
    expect(describeError(e)).toEqual({ code: 'ELOCKED', message: 'held by h_1', details: { owner: 'h_1' } });
  });

  it('classifies system errors by errno and keeps errno and path in the details', () => {
    const full = Object.assign(new Error('ENOSPC: no space left on device, write'), {
      code: 'ENOSPC',
      syscall: 'write',
      path: '/x',
    });
    expect(describeError(full)).toEqual({
      code: 'ENOSPC',
      message: 'ENOSPC: no space left on device, write',
      details: { errno: 'ENOSPC', path: '/x' },
    });
    const missing = Object.assign(new Error("ENOENT: no such file or directory, open '/y'"), {
      code: 'ENOENT',
      syscall: 'open',
      path: '/y',
    });
    expect(describeError(missing).code).toBe('EIO');
  });

  it('reports anything else as INTERNAL, a code docs/errors.md lists', () => {
    expect(describeError(new TypeError('x is not a function'))).toEqual({
      code: 'INTERNAL',
      message: 'x is not a function',
      details: {},
    });
    expect(describeError(undefined).code).toBe('INTERNAL');
    expect(Object.keys(ERROR_CODES)).toContain('INTERNAL');
  });
});
