import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ArchipelagoError, ERROR_CODES, fromSystemError } from './errors.js';

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
