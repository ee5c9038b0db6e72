/**
 * A client never hangs on a peer that is gone (clients/client.ts, "Dead peers"): calls to a port
 * nobody serves fail after `deadPeerTimeoutMs`; a peer that comes back in time serves them; a slow
 * but live peer is waited for; a removed segment fails every call at once; `abort()` ends them.
 * Real segment, served from this process (a port its peer left has no live owner).
 */
import { ArchipelagoError } from '@archipelago/libxseg';
import { Segment } from '@archipelago/libxseg/segment';
import { afterEach, describe, expect, it } from 'vitest';
import {
  PEER_DOWN_TIMEOUT_ENV,
  PEER_WATCH_MS,
  PeerClient,
  type PeerClientOptions,
} from './clients/client.js';
import { SegmentMapper } from './clients/segment-mapper.js';
import { SegmentVolumes } from './clients/segment-volumes.js';
import { PORTS, peerHarness } from './test-peers.js';

class Pinger extends PeerClient {
  constructor(opts: PeerClientOptions) {
    super(opts, 'test');
  }
}

const PORT = 5;
let seq = 0;
let seg: Segment | undefined;
let name = '';

/** A segment whose port PORT had a peer that stopped (a static port keeps queueing for the next one). */
function create(): Segment {
  name = `deadpeer${process.pid}x${++seq}`;
  seg = Segment.create(`posix:${name}:16:64:16:12`);
  seg.bindPort(PORT).close();
  return seg;
}

afterEach(() => {
  seg?.close();
  seg = undefined;
  try {
    Segment.destroy(name);
  } catch {
    // gone already
  }
});

/** The error (or 'ok') a promise settles with, and after how many ms. */
async function outcome(p: Promise<unknown>): Promise<{ e: unknown; ms: number }> {
  const t0 = Date.now();
  try {
    await p;
    return { e: 'ok', ms: Date.now() - t0 };
  } catch (e) {
    return { e, ms: Date.now() - t0 };
  }
}

describe('a client whose peer is gone', () => {
  it('fails calls to a port no peer serves any more after deadPeerTimeoutMs (ETIMEDOUT, peerDown)', async () => {
    const s = create();
    const c = new Pinger({ segment: s, port: PORT, deadPeerTimeoutMs: 600 });
    const { e, ms } = await outcome(c.ping());
    expect(e).toBeInstanceOf(ArchipelagoError);
    expect(e).toMatchObject({ code: 'ETIMEDOUT', details: { peerDown: true, port: PORT } });
    expect((e as Error).message).toMatch(/test peer on port 5 has not been running/);
    expect(ms).toBeGreaterThanOrEqual(600);
    expect(ms).toBeLessThan(600 + 3 * PEER_WATCH_MS + 500);
    expect(c.peerState()).toBe('down');
    await c.disconnect();
  });

  it('serves the calls when a peer binds the port in time (a restart keeps the segment)', async () => {
    const s = create();
    const c = new Pinger({ segment: s, port: PORT, deadPeerTimeoutMs: 3000 });
    const calls = [c.ping(), c.ping(), c.ping()].map(outcome);
    await new Promise((r) => setTimeout(r, 1000));
    const srv = s.bindPort(PORT);
    srv.onRequest((req) => srv.respond(req, { serviced: 0 }));
    const got = await Promise.all(calls);
    expect(got.map((g) => g.e)).toEqual(['ok', 'ok', 'ok']);
    expect(c.peerState()).toBe('running');
    await c.disconnect();
    srv.close();
  });

  it('waits for a live peer that is slow, however long (no false timeout)', async () => {
    const s = create();
    const srv = s.bindPort(PORT);
    srv.onRequest((req) => setTimeout(() => srv.respond(req, { serviced: 0 }), 1500));
    const c = new Pinger({ segment: s, port: PORT, deadPeerTimeoutMs: 400 });
    const { e, ms } = await outcome(c.ping());
    expect(e).toBe('ok');
    expect(ms).toBeGreaterThanOrEqual(1400);
    await c.disconnect();
    srv.close();
  });

  it('fails every call at once when the segment is removed, and every later one (EIO, segmentGone)', async () => {
    const s = create();
    const c = new Pinger({ segment: s, port: PORT, deadPeerTimeoutMs: 60_000 });
    const calls = [c.ping(), c.ping()].map(outcome);
    await new Promise((r) => setTimeout(r, 300));
    Segment.destroy(name);
    const got = await Promise.all(calls);
    for (const g of got) {
      expect(g.e).toMatchObject({ code: 'EIO', details: { segmentGone: true } });
      expect(g.ms).toBeLessThan(300 + 3 * PEER_WATCH_MS + 500);
    }
    expect(c.peerState()).toBe('segment gone');
    await expect(c.ping()).rejects.toMatchObject({ code: 'EIO', details: { segmentGone: true } });
    await c.disconnect();
  });

  it('counts a segment replaced by a new one of the same name as gone', async () => {
    const s = create();
    const c = new Pinger({ segment: s, port: PORT, deadPeerTimeoutMs: 60_000 });
    const call = outcome(c.ping());
    Segment.destroy(name);
    const fresh = Segment.create(`posix:${name}:16:64:16:12`);
    try {
      const srv = fresh.bindPort(PORT);
      srv.onRequest((req) => srv.respond(req, { serviced: 0 }));
      expect((await call).e).toMatchObject({ code: 'EIO', details: { segmentGone: true } });
    } finally {
      fresh.close();
    }
    await c.disconnect();
  });

  it('abort() fails the calls in flight at once (ECLOSED, aborted; never retried) and disconnect returns', async () => {
    const s = create();
    const c = new Pinger({ segment: s, port: PORT });
    const calls = [c.ping(), c.ping()].map(outcome);
    const closing = c.disconnect();
    await new Promise((r) => setTimeout(r, 100));
    c.abort('stopping');
    for (const g of await Promise.all(calls))
      expect(g.e).toMatchObject({ code: 'ECLOSED', details: { aborted: true } });
    await closing;
    expect(c.retries).toBe(0);
  });
});

/**
 * The operator's case (ARCHITECTURE, "dead peer"): blockerb is killed (-9) under a volume, and
 * I/O through vlmcd (as `vlmc` and the NBD endpoint send it in the daemon wiring) fails within
 * ARCHIPELAGO_PEER_DOWN_TIMEOUT_MS with ETIMEDOUT (or EIO) instead of hanging: vlmcd's and
 * mapperd's own clients of blockerb take the timeout from their environment (1.5 s here, 30 s by
 * default). Peers are processes of the built dist/main.js.
 */
describe('I/O through vlmcd when blockerb dies', () => {
  it('fails with ETIMEDOUT within ARCHIPELAGO_PEER_DOWN_TIMEOUT_MS (peers honour the variable)', async () => {
    const TIMEOUT = 1500;
    const h = peerHarness('dpchain', { env: { [PEER_DOWN_TIMEOUT_ENV]: String(TIMEOUT) } });
    try {
      const s = await h.startAll(h.fourRoles('dp_mapperd'));
      const mapper = new SegmentMapper({ segment: s, port: PORTS.mapperd, trackOpens: true });
      // The vlmc side waits for live vlmcd however long (it is alive: slow, not dead).
      const vols = new SegmentVolumes({
        segment: s,
        port: PORTS.vlmcd,
        tracker: mapper,
        deadPeerTimeoutMs: 0,
      });
      try {
        await mapper.create('dp1', { size: 8 * 1024 * 1024 });
        const data = Buffer.alloc(4096, 7);
        await vols.write('dp1', 0, data);
        expect((await vols.read('dp1', 0, 4096)).equals(data)).toBe(true);
        const blockerb = h.children.get('blockerb')!;
        blockerb.kill('SIGKILL');
        await new Promise((r) => blockerb.once('exit', r));
        for (const io of [() => vols.read('dp1', 0, 4096), () => vols.write('dp1', 4 * 1024 * 1024, data)]) {
          const { e, ms } = await outcome(io());
          expect(ArchipelagoError.isInstance(e), String(e)).toBe(true);
          expect(['ETIMEDOUT', 'EIO']).toContain((e as ArchipelagoError).code);
          expect((e as Error).message).toMatch(/blockerb|peer on port 3/);
          expect(ms).toBeGreaterThanOrEqual(TIMEOUT - 300);
          expect(ms).toBeLessThan(TIMEOUT + 4000);
        }
      } finally {
        await vols.close().catch(() => {});
        await mapper.close().catch(() => {});
      }
    } finally {
      await h.teardown();
    }
  }, 60_000);
});
