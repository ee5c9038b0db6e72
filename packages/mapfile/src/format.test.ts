import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import * as api from './index.js';

describe('format constants', () => {
  it('match the reference tables', () => {
    expect(Buffer.from('AMF.').readUInt32BE(0)).toBe(api.AMF_SIGNATURE);
    expect(api.ENTRY_V2_SIZE).toBe(1 + 4 + api.MAX_OBJECT_LEN);
    expect(api.MAX_VOLUME_NAME).toBe(api.MAX_OBJECT_LEN - 16 - 16 - 2 - 'archip_'.length);
    expect(api.DEFAULT_BLOCKSIZE).toBe(1 << 22);
    expect(api.V1_ENTRY_SIZE).toBe(1 + api.V0_ENTRY_SIZE);
    expect(api.ZERO_BLOCK).toBe(createHash('sha256').update('').digest('hex'));
    expect(api.UINT64_MAX).toBe(2n ** 64n - 1n);
    expect(api.ObjFlag).toEqual({ WRITABLE: 1, ARCHIP: 2, ZERO: 4, DELETED: 8 });
    expect(api.MapFlag).toEqual({ READONLY: 1, DELETED: 2, INCOMPLETE: 4, SPARSE: 8 });
    expect(Buffer.from('INTN').readUInt32BE(0)).toBe(api.INTENT_MAGIC);
  });

  it('the index exports the whole API', () => {
    for (const fn of [
      'encodeHeaderV2',
      'encodeIntent',
      'decodeIntent',
      'detectVersion',
      'decodeHeaderV2',
      'objectCount',
      'entriesPerMapBlock',
      'mapBlockName',
      'mapBlockLocation',
      'encodeEntryV2',
      'decodeEntryV2',
      'encodeEntriesV2',
      'decodeEntriesV2',
      'decodeV1',
      'decodeV0',
      'validateVolumeName',
      'isValidObjectName',
      'dataObjectName',
      'hex16',
      'pithosBlockHash',
      'merkleRoot',
      'stripTrailingZeros',
    ]) {
      expect(typeof (api as Record<string, unknown>)[fn]).toBe('function');
    }
  });
});
