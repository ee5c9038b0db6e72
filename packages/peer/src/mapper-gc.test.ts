/**
 * `[mapperd] gc_interval`: mapperd (the built dist/main.js) collects garbage by itself; here every
 * 200 ms. A snapshot and its volume removed through mapperd leave nothing behind in blockerb.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { FileBlocker } from '@archipelago/blocker-file';
import type { Segment } from '@archipelago/libxseg/segment';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SegmentMapper } from './clients/segment-mapper.js';
import { SegmentVolumes } from './clients/segment-volumes.js';
import { PORTS, peerHarness } from './test-peers.js';

const h = peerHarness('gctest');
const peers = h
  .fourRoles('gc_mapperd')
  .map((o) => (o.mapperd ? { ...o, mapperd: { ...o.mapperd, gcIntervalMs: 200, gcGraceMs: 0 } } : o));
let seg: Segment;

beforeAll(async () => {
  seg = await h.startAll(peers);
});

afterAll(() => h.teardown());

async function objects(): Promise<string[]> {
  const b = new FileBlocker({ dir: join(h.dir, 'blocks'), identity: 'probe_1' });
  const out: string[] = [];
  for await (const n of b.list()) out.push(n);
  await b.close();
  return out;
}

describe('mapperd gc_interval', () => {
  it('frees the objects of removed volumes by itself', async () => {
    const mapper = new SegmentMapper({ segment: seg, port: PORTS.mapperd, trackOpens: true });
    const vols = new SegmentVolumes({ segment: seg, port: PORTS.vlmcd, tracker: mapper });
    try {
      await mapper.create('v', { size: 3 * 65536, blocksize: 65536 });
      const data = randomBytes(3 * 65536);
      await vols.write('v', 0, data, { fua: true });
      await vols.close('v');
      await mapper.snapshot('v', 's');
      await mapper.clone('s', 'c');
      await mapper.remove('v');
      await mapper.remove('s');
      // Periodic runs come and go: the clone's objects (the snapshot's) stay meanwhile.
      await new Promise((r) => setTimeout(r, 600));
      expect((await objects()).length).toBe(3);
      expect((await vols.read('c', 0, data.length)).equals(data)).toBe(true);
      await vols.close('c');
      await mapper.remove('c');
      const until = Date.now() + 10_000;
      while ((await objects()).length > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      expect(await objects()).toEqual([]);
    } finally {
      await mapper.close();
    }
  });
});
