import { randomBytes } from 'node:crypto';
import { Composer } from '@archipelago/composer';
import type { Segment } from '@archipelago/libxseg/segment';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SegmentBlocker } from './clients/segment-blocker.js';
import { SegmentMapper } from './clients/segment-mapper.js';
import { SegmentVolumes } from './clients/segment-volumes.js';
import { PORTS, peerHarness } from './test-peers.js';

const LEASE_MS = 400;
const h = peerHarness('mctest', { nrOps: 32, env: { ARCHIPELAGO_MAP_LEASE_MS: String(LEASE_MS) } });
const P = PORTS;
const peers = h.fourRoles('mc_mapperd');
const mapperdOpts = peers[2]!;
let seg: Segment;

beforeAll(async () => {
  seg = await h.startAll(peers);
});

afterAll(() => h.teardown());

const MiB = 1 << 20;
const BS = 4 * MiB;

/** A vlmcd in this process: a Composer over a caching SegmentMapper, as vlmc-peer.ts builds it. */
function localVlmcd() {
  const mapper = new SegmentMapper({ segment: seg, port: P.mapperd, cache: true });
  const blockerb = new SegmentBlocker({ segment: seg, port: P.blockerb, kind: 'blockerb' });
  const composer = new Composer({ mapper, blockerb });
  mapper.onRecall = (n) => composer.frozen(n, async () => {});
  return {
    mapper,
    composer,
    async close() {
      await mapper.close();
      await blockerb.close();
    },
  };
}

type LocalVlmcd = ReturnType<typeof localVlmcd>;

/**
 * Runs a test with `cli`, a plain SegmentMapper (the changes behind the cache's back), and `v`, a
 * local vlmcd; closes both after.
 */
async function withVlmcd(fn: (cli: SegmentMapper, v: LocalVlmcd) => Promise<void>): Promise<void> {
  const cli = new SegmentMapper({ segment: seg, port: P.mapperd });
  const v = localVlmcd();
  try {
    await fn(cli, v);
  } finally {
    await v.close();
    await cli.close();
  }
}

/** Runs `fn` with a client of the real vlmcd, disconnected after. */
async function withVolumes(fn: (vols: SegmentVolumes) => Promise<void>): Promise<void> {
  const vols = new SegmentVolumes({ segment: seg, port: P.vlmcd });
  try {
    await fn(vols);
  } finally {
    await vols.disconnect();
  }
}

describe('map cache in vlmcd', () => {
  it('caches lookups: repeated I/O on the same blocks does not ask mapperd', () =>
    withVlmcd(async (cli, v) => {
      await cli.create('hits', { size: 8 * MiB, blocksize: BS });
      const data = randomBytes(4096);
      await v.composer.write('hits', 0, data);
      const before = { ...v.mapper.cacheStats };
      for (let i = 0; i < 20; i++) {
        await v.composer.write('hits', 4096 * (i % 8), data);
        expect((await v.composer.read('hits', 4096 * (i % 8), 4096)).equals(data)).toBe(true);
      }
      expect(v.mapper.cacheStats.hits - before.hits).toBeGreaterThanOrEqual(38);
      // reads past the end still fail (mapperd says so, the cache does not guess)
      await expect(v.composer.read('hits', 8 * MiB - 10, 20)).rejects.toMatchObject({ code: 'ERANGE' });
      await v.composer.close('hits');
    }));

  it('a snapshot behind its back: writes copy up again and the snapshot keeps the old bytes', () =>
    withVlmcd(async (cli, v) => {
      await cli.create('snapv', { size: 8 * MiB, blocksize: BS });
      const a = randomBytes(64 * 1024);
      const b = randomBytes(64 * 1024);
      await v.composer.write('snapv', 0, a);
      await v.composer.write('snapv', 4096, a.subarray(0, 4096)); // a cached writable mapping now
      const hits = v.mapper.cacheStats.hits;
      await v.composer.write('snapv', 0, a);
      expect(v.mapper.cacheStats.hits).toBeGreaterThan(hits);
      const objBefore = (await cli.entries('snapv'))[0]!.name;
      await cli.snapshot('snapv', 'snapv-s'); // not through the composer: mapperd recalls the lease
      expect(v.mapper.cacheStats.recalls).toBeGreaterThanOrEqual(1);
      await v.composer.write('snapv', 0, b);
      expect((await v.composer.read('snapv', 0, b.length)).equals(b)).toBe(true);
      expect((await v.composer.read('snapv-s', 0, a.length)).equals(a)).toBe(true);
      expect((await cli.entries('snapv'))[0]!.name).not.toBe(objBefore);
      expect((await cli.entries('snapv-s'))[0]!.name).toBe(objBefore);
      // the real vlmcd too
      await withVolumes(async (vols) => {
        await vols.write('snapv', 8192, b.subarray(0, 4096));
        await vols.write('snapv', 8192, b.subarray(0, 4096)); // cached in vlmcd now
        await cli.snapshot('snapv', 'snapv-s2');
        await vols.write('snapv', 8192, a.subarray(0, 4096));
        expect((await vols.read('snapv-s2', 8192, 4096)).equals(b.subarray(0, 4096))).toBe(true);
        expect((await vols.read('snapv', 8192, 4096)).equals(a.subarray(0, 4096))).toBe(true);
        await vols.close('snapv');
        await vols.close('snapv-s2');
      });
      await v.composer.close('snapv');
      await v.composer.close('snapv-s');
    }));

  it('resize, discard, rename and remove behind its back are seen at once', () =>
    withVlmcd(async (cli, v) => {
      await cli.create('chg', { size: 12 * MiB, blocksize: BS });
      const data = randomBytes(12 * MiB);
      await v.composer.write('chg', 0, data);
      expect((await v.composer.read('chg', 0, data.length)).equals(data)).toBe(true); // all cached
      // shrink to 6 MiB, grow back to 12: the tail reads zeros, past-the-end fails in between
      await cli.resize('chg', 6 * MiB);
      await expect(v.composer.read('chg', 8 * MiB, 10)).rejects.toMatchObject({ code: 'ERANGE' });
      await cli.resize('chg', 12 * MiB);
      expect((await v.composer.read('chg', 0, 6 * MiB)).equals(data.subarray(0, 6 * MiB))).toBe(true);
      expect((await v.composer.read('chg', 6 * MiB, 6 * MiB)).equals(Buffer.alloc(6 * MiB))).toBe(true);
      // a discard through another client (as a second composer's trim would)
      await v.composer.write('chg', 0, data.subarray(0, 8 * MiB));
      await cli.discard('chg', 1);
      expect((await v.composer.read('chg', BS, BS)).equals(Buffer.alloc(BS))).toBe(true);
      expect((await v.composer.read('chg', 0, 100)).equals(data.subarray(0, 100))).toBe(true);
      // rename: the old name is gone for the cache too, the new one reads the same bytes
      await v.composer.read('chg', 0, 100);
      await cli.rename('chg', 'chg2');
      await expect(v.composer.read('chg', 0, 100)).rejects.toMatchObject({ code: 'ENOENT_VOLUME' });
      expect((await v.composer.read('chg2', 0, 100)).equals(data.subarray(0, 100))).toBe(true);
      // remove: gone at once
      await cli.remove('chg2');
      await expect(v.composer.read('chg2', 0, 100)).rejects.toMatchObject({ code: 'ENOENT_VOLUME' });
      await expect(v.composer.write('chg2', 0, data.subarray(0, 10))).rejects.toMatchObject({
        code: 'ENOENT_VOLUME',
      });
    }));

  it('its own snapshot, trim and close through the composer keep the cache right', () =>
    withVlmcd(async (cli, v) => {
      await cli.create('ownv', { size: 8 * MiB, blocksize: BS });
      const a = randomBytes(8192);
      const b = randomBytes(8192);
      await v.composer.write('ownv', 0, a);
      await v.composer.write('ownv', 0, a);
      await v.composer.snapshot('ownv', 'ownv-s');
      await v.composer.write('ownv', 0, b);
      expect((await v.composer.read('ownv-s', 0, a.length)).equals(a)).toBe(true);
      expect((await v.composer.read('ownv', 0, b.length)).equals(b)).toBe(true);
      await v.composer.trim('ownv', 0, BS);
      expect((await v.composer.read('ownv', 0, b.length)).equals(Buffer.alloc(b.length))).toBe(true);
      await v.composer.write('ownv', 0, b);
      await v.composer.close('ownv');
      expect((await cli.hello()).open).not.toContain('ownv');
      expect((await v.composer.read('ownv', 0, b.length)).equals(b)).toBe(true);
      await v.composer.close('ownv');
      await v.composer.close('ownv-s');
    }));

  it('a recall waits for the I/O in flight; a dead holder does not block a change', () =>
    withVlmcd(async (cli, v) => {
      let slowRecall = 0;
      v.mapper.onRecall = async (n) => {
        slowRecall++;
        await new Promise((r) => setTimeout(r, 300));
        await v.composer.frozen(n, async () => {});
      };
      await cli.create('rec', { size: 8 * MiB, blocksize: BS });
      await v.composer.write('rec', 0, Buffer.from('x'));
      await v.composer.write('rec', 0, Buffer.from('y'));
      const t0 = Date.now();
      await cli.snapshot('rec', 'rec-s');
      expect(slowRecall).toBe(1);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
      await v.composer.write('rec', 0, Buffer.from('z'));
      expect((await v.composer.read('rec-s', 0, 1)).toString()).toBe('y');
      // the holder goes away with its lease out: the next change does not wait for it
      await v.close();
      const t1 = Date.now();
      await cli.snapshot('rec', 'rec-s2');
      expect(Date.now() - t1).toBeLessThan(5000);
      expect((await cli.info('rec-s2')).readonly).toBe(true);
      await withVolumes(async (vols) => {
        expect((await vols.read('rec-s2', 0, 1)).toString()).toBe('z');
        await vols.close('rec-s2');
        await vols.close('rec-s');
      });
      await cli.closeVolume('rec');
    }));

  it('a restarted mapperd makes changes behind the cache wait until the old leases ran out', () =>
    withVlmcd(async (cli, v) => {
      await cli.create('rst', { size: 8 * MiB, blocksize: BS });
      const a = Buffer.alloc(4096, 1);
      await v.composer.write('rst', 0, a);
      const old = h.children.get('mapperd')!;
      const gone = new Promise((r) => old.once('exit', r));
      old.kill('SIGKILL');
      await gone;
      // while mapperd is down the cache still serves what it holds under its lease
      await v.composer.write('rst', 0, a);
      await h.start(mapperdOpts);
      const t0 = performance.now();
      await cli.snapshot('rst', 'rst-s'); // retried until the new mapperd serves it
      expect(performance.now() - t0).toBeGreaterThanOrEqual(LEASE_MS - 150);
      const b = Buffer.alloc(4096, 2);
      await v.composer.write('rst', 0, b);
      expect((await v.composer.read('rst-s', 0, 4096)).equals(a)).toBe(true);
      expect((await v.composer.read('rst', 0, 4096)).equals(b)).toBe(true);
      await v.composer.close('rst');
      await v.composer.close('rst-s');
    }));
});

describe('READV: reads of one tick in one request', () => {
  it('batches reads issued together; each gets its own bytes or its own error; order with writes is kept', async () => {
    const cli = new SegmentMapper({ segment: seg, port: P.mapperd });
    const vols = new SegmentVolumes({ segment: seg, port: P.vlmcd });
    try {
      await cli.create('rv', { size: 8 * MiB, blocksize: BS });
      const data = randomBytes(8 * MiB);
      await vols.write('rv', 0, data);
      const offs = Array.from({ length: 40 }, (_, i) => (i * 197 * 4096) % (8 * MiB - 8192));
      const outs = await Promise.all(
        offs.map((o, i) =>
          i % 2 === 0 ? vols.read('rv', o, 4096 + i) : vols.readInto('rv', o, Buffer.alloc(4096 + i)),
        ),
      );
      outs.forEach((b, i) => {
        expect(b.equals(data.subarray(offs[i]!, offs[i]! + 4096 + i)), `read ${i}`).toBe(true);
      });
      expect(vols.batchStats.requests).toBeGreaterThanOrEqual(1);
      expect(vols.batchStats.reads).toBeGreaterThanOrEqual(40);
      // one bad read in a batch: it fails alone
      const mixed = await Promise.allSettled([
        vols.read('rv', 0, 10),
        vols.read('rv', 8 * MiB - 5, 10),
        vols.read('rv', 100, 10),
      ]);
      expect(mixed.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
      expect((mixed[1] as PromiseRejectedResult).reason).toMatchObject({ code: 'ERANGE' });
      expect((mixed[2] as PromiseFulfilledResult<Buffer>).value.equals(data.subarray(100, 110))).toBe(true);
      // a read issued before an overlapping write sees the old bytes, one issued after the new ones
      const fresh = randomBytes(4096);
      const [before, , after] = await Promise.all([
        vols.read('rv', 4096, 4096),
        vols.write('rv', 4096, fresh),
        vols.read('rv', 4096, 4096),
      ]);
      expect(before.equals(data.subarray(4096, 8192))).toBe(true);
      expect(after.equals(fresh)).toBe(true);
      await vols.close('rv');
    } finally {
      await vols.disconnect();
      await cli.close();
    }
  });
});
