/**
 * The cooperative hand-over in the daemon wiring, with real daemons: two "hosts" (two sets of
 * blockerb, blockerm, mapperd, vlmcd on their own segments, with distinct lock identities) over
 * one shared blocker directory, as two hosts of a live migration over shared storage. Host A does
 * I/O as `vlmc` does (through its vlmcd); host B as a `vlmc map` endpoint does (a Composer over a
 * caching SegmentMapper, straight to blockerb). A write on one side asks the holder's mapperd for
 * the volume (REQUEST_RELEASE through blockerm); its next lease renewal (RENEW reports the
 * request) makes it recall its clients' map leases, flush and yield the volume. Then: an embedded
 * holder of a third identity (it hands over at once: it watches the request file), a host hold
 * and a holder without a release handler (ELOCKED naming them within the lock timeout).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileBlocker } from '@archipelago/blocker-file';
import { Composer } from '@archipelago/composer';
import { ArchipelagoError } from '@archipelago/libxseg';
import type { Segment } from '@archipelago/libxseg/segment';
import { Mapper } from '@archipelago/mapper';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SegmentBlocker } from './clients/segment-blocker.js';
import { SegmentMapper } from './clients/segment-mapper.js';
import { SegmentVolumes } from './clients/segment-volumes.js';
import type { PeerOptions } from './options.js';
import { decodeError, PeerOp, toJson } from './protocol/wire.js';
import { type PeerHarness, PORTS, peerHarness } from './test-peers.js';

/** The volume-lock lease of both mapperds: they renew (and see requests) every LEASE_MS / 3. */
const LEASE_MS = 3000;
/** How long a write waits for another owner's lock. */
const LOCK_TIMEOUT_MS = 4000;
const A_ID = 'hosta_mapperd';
const B_ID = 'hostb_mapperd';
const MiB = 1 << 20;
const P = PORTS;

const ha = peerHarness('hoa', { nrOps: 32 });
const hb = peerHarness('hob', { nrOps: 32 });
/** The storage both hosts share: host A's blocks/ and maps/. */
const blocks = join(ha.dir, 'blocks');
const maps = join(ha.dir, 'maps');

/** The four roles of a host, its mapperd with `identity` and the lease and lock timeout above. */
function host(h: PeerHarness, identity: string): PeerOptions[] {
  const peers = h.fourRoles(identity, {
    blockerb: { type: 'file_blocker', dir: blocks },
    blockerm: { type: 'file_blocker', dir: maps },
  });
  const m = peers[2]!;
  if (m.mapperd) Object.assign(m.mapperd, { leaseMs: LEASE_MS, lockTimeoutMs: LOCK_TIMEOUT_MS });
  return peers;
}

let segA: Segment;
let segB: Segment;
/** Host A: `vlmc` I/O through vlmcd, map calls to mapperd, lock queries to blockerm. */
let a: { vols: SegmentVolumes; mapper: SegmentMapper; locks: SegmentBlocker };
/** Host B: a `vlmc map` endpoint's parts (compose: 'local'), and lock queries. */
let b: { composer: Composer; mapper: SegmentMapper; blockerb: SegmentBlocker; locks: SegmentBlocker };

beforeAll(async () => {
  segA = await ha.startAll(host(ha, A_ID));
  segB = await hb.startAll(host(hb, B_ID));
  a = {
    vols: new SegmentVolumes({ segment: segA, port: P.vlmcd }),
    mapper: new SegmentMapper({ segment: segA, port: P.mapperd }),
    locks: new SegmentBlocker({ segment: segA, port: P.blockerm, identity: A_ID, kind: 'blockerm' }),
  };
  // As the runtime's daemon wiring builds an endpoint's parts (runtime/src/daemons-client.ts).
  const mapper = new SegmentMapper({ segment: segB, port: P.mapperd, trackOpens: true, cache: true });
  const blockerb = new SegmentBlocker({ segment: segB, port: P.blockerb, identity: B_ID, kind: 'blockerb' });
  const composer = new Composer({ mapper, blockerb });
  mapper.onRecall = (n) => composer.frozen(n, async () => {});
  b = {
    composer,
    mapper,
    blockerb,
    locks: new SegmentBlocker({ segment: segB, port: P.blockerm, identity: B_ID, kind: 'blockerm' }),
  };
}, 60_000);

afterAll(async () => {
  for (const c of toClose) await c.close().catch(() => {});
  for (const c of [a?.vols, a?.mapper, a?.locks, b?.mapper, b?.blockerb, b?.locks])
    await c?.disconnect().catch(() => {});
  await hb.teardown();
  await ha.teardown();
});

const fill = (byte: number, n = 4096) => Buffer.alloc(n, byte);
const same = (x: Buffer, y: Buffer) => x.equals(y);
const mapperdLog = (h: PeerHarness) => readFileSync(join(h.dir, 'run/mapperd.log'), 'utf8');
/** `p`'s error (it must fail). */
const failure = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected a failure');
    },
    (e: unknown) => e as Error,
  );

/**
 * How long host `h`'s mapperd took to hand volume `v` over to `to`, until the asker held the lock
 * (its log, written once the asker took it: waited for up to a second), ms.
 */
async function handedMs(h: PeerHarness, v: string, to: string): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const line = mapperdLog(h)
      .split('\n')
      .findLast((l) => l.includes(`"handed volume ${v} over to ${to}"`));
    if (line !== undefined) return (JSON.parse(line) as { ms: number }).ms;
    await new Promise((r) => setTimeout(r, 10));
  }
  return Number.NaN;
}

/** Embedded parts of identity `identity` on the shared storage (closed after the test file). */
function embedded(identity: string, leaseMs: number) {
  const m = new FileBlocker({ dir: maps, identity, lockPollMs: 20 });
  const bb = new FileBlocker({ dir: blocks, identity });
  const mapper = new Mapper({ blockerm: m, blockerb: bb, leaseMs, lockTimeoutMs: LOCK_TIMEOUT_MS });
  const composer = new Composer({ mapper, blockerb: bb });
  toClose.push(mapper, bb, m);
  return { m, bb, mapper, composer };
}
const toClose: { close(): Promise<void> }[] = [];

async function timed<T>(p: Promise<T>): Promise<{ value: T; ms: number }> {
  const t0 = performance.now();
  const value = await p;
  return { value, ms: Math.round(performance.now() - t0) };
}

describe('REQUEST_RELEASE on the wire', () => {
  it(`records a request the holder's RENEW reply carries; null for a free lock; EINVAL for a bad "by"`, async () => {
    const elsewhere = { host: 'elsewhere', boot: 'b', pid: 4242, start: '1' };
    const lock = 'wire1';
    const holder = new SegmentBlocker({
      segment: segA,
      port: P.blockerm,
      identity: 'x_holder',
      process: elsewhere,
    });
    const asker = new SegmentBlocker({ segment: segA, port: P.blockerm, identity: 'x_asker' });
    const port = segA.bindDynamicPort();
    try {
      expect(await asker.requestRelease(lock)).toBeNull();
      await holder.acquire(lock, { leaseMs: 60_000 });
      expect((await asker.requestRelease(lock, { by: 'x_vm7' }))?.owner).toBe('x_holder');
      // The JSON record of RENEW's reply keeps the request.
      const renewed = await holder.renew(lock, { leaseMs: 60_000 });
      expect(renewed.owner).toBe('x_holder');
      expect(renewed.releaseRequested?.by).toBe('x_vm7');
      expect(renewed.releaseRequested?.at).toBeGreaterThan(Date.now() - 60_000);
      // The peer checks "by" itself (SegmentBlocker never sends a bad one).
      for (const by of ['', 5, 'x'.repeat(129)]) {
        const data = toJson({ identity: 'x_asker', by });
        const r = await port.call({ dst: P.blockerm, op: PeerOp.REQUEST_RELEASE, target: lock, data });
        const e = r.ok ? null : decodeError(Buffer.from(r.data), 'raw');
        r.release();
        expect(e?.code, String(by)).toBe('EINVAL');
        expect(e?.message).toMatch(/"by"/);
      }
      await holder.release(lock);
      expect(await a.locks.lockOwner(lock)).toBeNull();
    } finally {
      port.close();
      await holder.close();
      await asker.close();
    }
  });
});

describe("one identity's lock calls in the blocker peer", () => {
  it('a release racing a renewal of the same lock stays released (the renewal does not bring it back)', async () => {
    const lock = 'race1';
    const holder = new SegmentBlocker({ segment: segA, port: P.blockerm, identity: 'x_racer' });
    let back = 0;
    try {
      for (let i = 0; i < 50; i++) {
        await holder.acquire(lock, { leaseMs: 60_000 });
        await Promise.all([holder.renew(lock, { leaseMs: 60_000 }).catch(() => null), holder.release(lock)]);
        if ((await holder.lockOwner(lock)) !== null) {
          back++;
          await holder.release(lock);
        }
      }
    } finally {
      await holder.close();
    }
    expect(back).toBe(0);
  });
});

describe('cooperative hand-over between two hosts of daemons', () => {
  it('the writer on one host gets the volume from the other: data before and after reads back on both sides', async () => {
    const v = 'hov1';
    await a.mapper.create(v, { size: 8 * MiB });
    await a.vols.write(v, 0, fill(0xa1));
    expect(await a.locks.lockOwner(v)).toBe(A_ID);

    // B reads while A holds the volume: served (uncached by B's mapperd), A keeps it.
    expect(same(await b.composer.read(v, 0, 4096), fill(0xa1))).toBe(true);
    expect(await b.locks.lockOwner(v)).toBe(A_ID);

    // B's first write asks A's mapperd, which recalls vlmcd's lease, flushes and yields.
    const toB = await timed(b.composer.write(v, 4096, fill(0xb2)));
    expect((await b.locks.lockInfo(v))?.owner).toBe(B_ID);
    expect((await a.mapper.hello()).open).not.toContain(v);
    expect(mapperdLog(ha)).toMatch(new RegExp(`handing volume ${v} over to ${B_ID}`));
    expect(toB.ms).toBeLessThan(LEASE_MS / 3 + 1500);

    // Both sides read both writes; A's reads do not take the lock back.
    expect(same(await a.vols.read(v, 4096, 4096), fill(0xb2))).toBe(true);
    expect(same(await a.vols.read(v, 0, 4096), fill(0xa1))).toBe(true);
    expect(same(await b.composer.read(v, 0, 8192), Buffer.concat([fill(0xa1), fill(0xb2)]))).toBe(true);
    expect(await a.locks.lockOwner(v)).toBe(B_ID);

    // B's later writes are B's alone: A sees them at once (its reads are uncached).
    await b.composer.write(v, 0, fill(0xb3));
    expect(same(await a.vols.read(v, 0, 4096), fill(0xb3))).toBe(true);

    // And back: A writes, B's mapperd recalls the endpoint's lease (INVALIDATE), yields.
    const recalls = b.mapper.cacheStats.recalls;
    const toA = await timed(a.vols.write(v, 8192, fill(0xa4)));
    expect(await a.locks.lockOwner(v)).toBe(A_ID);
    expect(b.mapper.cacheStats.recalls).toBeGreaterThan(recalls);
    expect(mapperdLog(hb)).toMatch(new RegExp(`handing volume ${v} over to ${A_ID}`));
    expect(toA.ms).toBeLessThan(LEASE_MS / 3 + 1500);
    const all = Buffer.concat([fill(0xb3), fill(0xb2), fill(0xa4)]);
    expect(same(await b.composer.read(v, 0, 3 * 4096), all)).toBe(true);
    expect(same(await a.vols.read(v, 0, 3 * 4096), all)).toBe(true);
    // The time to the holder's next renewal dominates; the hand-over itself (recall, flush, yield)
    // is short.
    const workA = await handedMs(ha, v, B_ID);
    const workB = await handedMs(hb, v, A_ID);
    expect(workA).toBeLessThan(500);
    expect(workB).toBeLessThan(500);
    console.log(
      `hand-over with the holder renewing every ${LEASE_MS / 3} ms: A→B ${toB.ms} ms (B's write; A's mapperd handed over in ${workA} ms), B→A ${toA.ms} ms (A's write; B's in ${workB} ms)`,
    );
  });

  it('a stream of writes on both sides: each side takes the volume in turn, nothing is lost', async () => {
    const v = 'hov2';
    await a.mapper.create(v, { size: 8 * MiB });
    const rounds = 3;
    const times: number[] = [];
    for (let i = 0; i < rounds; i++) {
      // Each side writes its own 4 KiB block of the round, a few times over (the later ones find
      // the volume already theirs).
      const t = await timed(b.composer.write(v, 2 * i * 4096, fill(0x10 + i)));
      times.push(t.ms);
      await b.composer.write(v, 2 * i * 4096, fill(0x20 + i));
      const u = await timed(a.vols.write(v, (2 * i + 1) * 4096, fill(0x30 + i)));
      times.push(u.ms);
      await a.vols.write(v, (2 * i + 1) * 4096, fill(0x40 + i));
    }
    const want = Buffer.concat(
      Array.from({ length: rounds }, (_, i) => [fill(0x20 + i), fill(0x40 + i)]).flat(),
    );
    expect(same(await a.vols.read(v, 0, want.length), want)).toBe(true);
    expect(same(await b.composer.read(v, 0, want.length), want)).toBe(true);
    console.log(`hand-overs (renewal every ${LEASE_MS / 3} ms): ${times.join(', ')} ms`);
  });

  it('an embedded holder of another identity that watches its lock hands over at once', async () => {
    const v = 'hov3';
    // A long lease: a prompt hand-over was woken by the watch (inotify), not by a renewal.
    const { m, bb, mapper: c, composer: cc } = embedded('hostc_embedded', 60_000);
    c.onReleaseRequest = (name) =>
      cc.frozen(name, async () => {
        await bb.flush();
        await c.yieldVolume(name);
      });
    await c.create(v, { size: 8 * MiB });
    await cc.write(v, 0, fill(0xc1));
    expect(await b.locks.lockOwner(v)).toBe('hostc_embedded');
    const t = await timed(b.composer.write(v, 4096, fill(0xb2)));
    expect(await b.locks.lockOwner(v)).toBe(B_ID);
    expect(t.ms).toBeLessThan(1500);
    expect(same(await cc.read(v, 0, 8192), Buffer.concat([fill(0xc1), fill(0xb2)]))).toBe(true);
    // And back to the embedded writer: B's mapperd yields at its next renewal.
    const back = await timed(cc.write(v, 0, fill(0xc3)));
    expect(await m.lockOwner(v)).toBe('hostc_embedded');
    expect(same(await b.composer.read(v, 0, 8192), Buffer.concat([fill(0xc3), fill(0xb2)]))).toBe(true);
    console.log(
      `embedded holder (watching) → daemons: ${t.ms} ms; daemons (renewing every ${LEASE_MS / 3} ms) → embedded: ${back.ms} ms`,
    );
  });
});

describe('writes in flight at the hand-over', () => {
  it("none of the old holder's writes lands after the new owner's: they drain first, or wait for the volume", async () => {
    const v = 'hov6';
    const blocks32 = Array.from({ length: 32 }, (_, k) => k * 4 * MiB + 8192); // one per object
    await a.mapper.create(v, { size: 128 * MiB });
    // Host A writes each block over and over through vlmcd (copy-ups first, then cached
    // mappings) until told to stop.
    let acked = 0;
    let stop = false;
    const errors: unknown[] = [];
    const writers = blocks32.map(async (off, k) => {
      for (let i = 0; !stop; i++) {
        await a.vols.write(v, off, fill(0x10 + ((k + i) % 0x60))).catch((e: unknown) => errors.push(e));
        acked++;
      }
    });
    // The new owner: embedded, without a release handler (it keeps the volume while it has it),
    // and without a lease: an embedded holder's close can race its own renewal (which A's asks
    // trigger through the watch) and leave the lock behind (the file blocker rewrites a renewed
    // lock by rename; the blocker peer serializes them, an embedded blocker does not).
    const { composer: cc } = embedded('hoste_embedded', 0);
    let t = { ms: 0 };
    let ackedBefore = 0;
    try {
      while (acked < 200) await new Promise((r) => setTimeout(r, 5));
      t = await timed(Promise.all(blocks32.map((off) => cc.write(v, off, fill(0xee)))));
      ackedBefore = acked;
      // Every block reads the new owner's data: no write of A landed after it. A's writes since
      // wait for the volume (A's mapperd asks for it back; reads through A would wait behind them).
      for (const off of blocks32)
        expect(same(await cc.read(v, off, 4096), fill(0xee)), `block at ${off}`).toBe(true);
      expect(acked).toBe(ackedBefore);
    } finally {
      // The new owner is done with it (well within A's lock timeout): A's waiting writes take
      // the volume back and end (also when an expectation failed).
      stop = true;
      await cc.close(v);
    }
    await Promise.all(writers);
    expect(errors).toEqual([]);
    expect(acked).toBeGreaterThan(ackedBefore);
    for (const off of blocks32) {
      const got = await a.vols.read(v, off, 4096);
      expect(same(got, await cc.read(v, off, 4096))).toBe(true);
      const byte = got[0] ?? -1;
      expect(same(got, fill(byte)) && (byte === 0xee || (byte >= 0x10 && byte < 0x70))).toBe(true);
    }
    console.log(`under 32 writers on the holder: hand-over ${t.ms} ms (${ackedBefore} writes of A before)`);
  });
});

describe('a holder that does not hand over', () => {
  it('a host hold (vlmc lock on host A): the writer on B fails ELOCKED naming it, within the lock timeout', async () => {
    const v = 'hov4';
    await a.mapper.create(v, { size: 8 * MiB });
    await a.mapper.lock(v);
    try {
      const t0 = performance.now();
      const e = await failure(b.composer.write(v, 0, fill(1)));
      const ms = performance.now() - t0;
      expect(ArchipelagoError.is(e, 'ELOCKED'), String(e)).toBe(true);
      expect(e.message).toMatch(new RegExp(`locked by ${A_ID}.*held by the host.*vlmc close ${v}`));
      expect(ms).toBeGreaterThan(LOCK_TIMEOUT_MS - 100);
      expect(ms).toBeLessThan(LOCK_TIMEOUT_MS + 2000);
      expect(await a.locks.lockOwner(v)).toBe(A_ID);
      // Reads on B still work, and the hold is A's to end.
      expect(same(await b.composer.read(v, 0, 4096), fill(0))).toBe(true);
    } finally {
      await a.mapper.unlock(v);
    }
  });

  it('a live holder without a release handler: ELOCKED naming it (process and host) after asking', async () => {
    const v = 'hov5';
    const { m, mapper: d } = embedded('hostd_embedded', 3000);
    await d.create(v, { size: 8 * MiB });
    await d.openVolume(v);
    const t0 = performance.now();
    const e = await failure(b.composer.write(v, 0, fill(1)));
    const ms = performance.now() - t0;
    expect(ArchipelagoError.is(e, 'ELOCKED'), String(e)).toBe(true);
    expect(e.message).toMatch(/hostd_embedded \(pid \d+ on .*\).*asked to hand the volume over/);
    expect(ms).toBeLessThan(LOCK_TIMEOUT_MS + 2000);
    expect(await m.lockOwner(v)).toBe('hostd_embedded');
  });
});
