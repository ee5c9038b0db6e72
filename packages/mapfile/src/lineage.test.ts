import { describe, expect, it } from 'vitest';
import { decodeIntent, encodeHeaderV2, encodeIntent } from './header.js';
import { decodeLineage, encodeLineage, lineageObjectName, rollbackMapName } from './lineage.js';
import { validateVolumeName } from './names.js';

describe('lineage record', () => {
  it('round-trips a clone, a snapshot and a flattened clone', () => {
    const recs = [
      { id: '0123456789abcdef', created: 5, parent: { name: 's1', id: 'fedcba9876543210' } },
      { id: '0123456789abcdef', created: 0, origin: { name: 'v', id: null, epoch: 18446744073709551615n } },
      { id: '0123456789abcdef', created: 1, parent: null, flattened: true },
      { id: '0123456789abcdef', created: 1 },
    ];
    for (const r of recs) expect(decodeLineage(encodeLineage(r))).toEqual(r);
    expect(encodeLineage(recs[0]!).toString('latin1', 0, 4)).toBe('LNG1');
  });

  it('reads anything else as no record', () => {
    for (const b of ['', 'LNG1', 'LNG1{', 'LNG1{"id":"xyz"}', '{"id":"0123456789abcdef"}', 'AMF.'])
      expect(decodeLineage(Buffer.from(b))).toBeNull();
    expect(() => encodeLineage({ id: 'nothex', created: 0 })).toThrow(RangeError);
  });

  it('names sidecars no volume, map block or lock can have', () => {
    expect(lineageObjectName('vol')).toBe('vol_ffffffffffffffff');
    expect(rollbackMapName('vol')).toBe('vol_fffffffffffffffe');
    expect(() => validateVolumeName(lineageObjectName('vol'))).toThrow(/hex/);
    expect(() => validateVolumeName(rollbackMapName('vol'))).toThrow(/hex/);
  });

  it('the rolling-back intent round-trips after a header; older readers see the header only', () => {
    const intent = { kind: 'rolling-back' as const, name: rollbackMapName('v'), epoch: 7n };
    const head = Buffer.concat([
      encodeHeaderV2({ size: 4096, blocksize: 4096, flags: 4, epoch: 6n }),
      encodeIntent(intent),
    ]);
    expect(decodeIntent(head)).toEqual(intent);
    expect(head.readUInt8(36)).toBe(3);
  });
});
