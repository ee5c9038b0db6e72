/**
 * mapperd's ROLLBACK and FLATTEN ops (mapper-wire.ts), with the four roles as processes of the
 * built dist/main.js: a clone served by vlmcd (which caches its map under mapperd's lease) is
 * flattened by another client while vlmcd writes it; a rollback of it is refused while mapperd
 * holds it open for vlmcd, and goes through once vlmcd closed it.
 */
import { randomBytes } from 'node:crypto';
import type { Segment } from '@archipelago/libxseg/segment';
import { sharedBlocks } from '@archipelago/mapper';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SegmentMapper } from './clients/segment-mapper.js';
import { SegmentVolumes } from './clients/segment-volumes.js';
import { PORTS, peerHarness } from './test-peers.js';

const BS = 65536;
const BLOCKS = 16;
const h = peerHarness('lcops');
let seg: Segment;
let tool: SegmentMapper;
let vlmcdTracker: SegmentMapper;
let vols: SegmentVolumes;

beforeAll(async () => {
  seg = await h.startAll(h.fourRoles('lc_mapperd'));
  tool = new SegmentMapper({ segment: seg, port: PORTS.mapperd });
  vlmcdTracker = new SegmentMapper({ segment: seg, port: PORTS.mapperd, trackOpens: true });
  vols = new SegmentVolumes({ segment: seg, port: PORTS.vlmcd, tracker: vlmcdTracker });
});

afterAll(async () => {
  await Promise.allSettled([tool?.close(), vlmcdTracker?.close(), vols?.disconnect()]);
  await h.teardown();
});

const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => 'resolved',
    (e: { code?: string }) => e.code ?? String(e),
  );

describe('mapperd rollback and flatten', () => {
  it('flattens a clone online while vlmcd writes it; rollback is refused while it is open, done after', async () => {
    const base = randomBytes(BLOCKS * BS);
    await tool.create('base', { size: base.length, blocksize: BS });
    await vols.write('base', 0, base, { fua: true });
    await vols.close('base');
    await tool.snapshot('base', 'base-s');
    await tool.clone('base-s', 'c');

    // vlmcd writes the clone (each first write to a block copies it up) while the tool flattens it.
    const model = Buffer.from(base);
    const writes = (async () => {
      for (let i = 0; i < 24; i++) {
        const off = ((i * 7) % BLOCKS) * BS + ((i * 4096) % BS);
        const data = randomBytes(4096);
        await vols.write('c', off, data, { fua: true });
        data.copy(model, off);
      }
    })();
    await vols.read('c', 0, 4096); // vlmcd holds c open in mapperd, its map leased
    const [flat] = await Promise.all([tool.flatten('c'), writes]);
    expect(flat).toMatchObject({ name: 'c', parent: 'base-s' });
    expect(flat.copied).toBeGreaterThan(0);
    expect(sharedBlocks('c', await tool.entries('c'))).toEqual([]);
    expect((await vols.read('c', 0, model.length)).equals(model)).toBe(true);
    // A flattened clone has nothing left to copy.
    expect((await tool.flatten('c')).copied).toBe(0);

    // Rollback: refused while mapperd holds c open for vlmcd (its map leased), with what to do.
    await tool.snapshot('c', 'c-s');
    const atSnap = Buffer.from(model);
    await vols.write('c', 0, Buffer.alloc(BS, 0xaa), { fua: true });
    const refused = await tool.rollback('c', 'c-s').catch((e: Error & { code?: string }) => e);
    expect(refused).toMatchObject({ code: 'EBUSY' });
    expect((refused as Error).message).toMatch(/holds it open.*vlmc unmap c/);
    expect((await vols.read('c', 0, BS)).equals(Buffer.alloc(BS, 0xaa))).toBe(true);
    await vols.close('c');
    const rolled = await tool.rollback('c', 'c-s');
    expect(rolled).toMatchObject({ name: 'c', size: model.length });
    expect((await vols.read('c', 0, atSnap.length)).equals(atSnap)).toBe(true);
    await vols.close('c');
  });

  it('reports bad requests with their codes', async () => {
    await tool.create('plain', { size: 4 * BS, blocksize: BS });
    expect(await codeOf(tool.rollback('plain', 'nosuch'))).toBe('ENOENT_VOLUME');
    expect(await codeOf(tool.rollback('plain', 'plain'))).toBe('EINVAL');
    expect(await codeOf(tool.flatten('nosuch'))).toBe('ENOENT_VOLUME');
    await tool.snapshot('plain', 'plain-s');
    expect(await codeOf(tool.flatten('plain-s'))).toBe('EREADONLY');
    expect(await codeOf(tool.rollback('plain-s', 'plain-s'))).toBe('EINVAL');
    // A volume with no parent flattens to nothing.
    expect(await tool.flatten('plain')).toMatchObject({ name: 'plain', copied: 0, parent: null });
  });
});
