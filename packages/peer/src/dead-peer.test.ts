/**
 * A client never hangs on a peer that is gone (clients/client.ts, "Dead peers"): calls to a port
 * nobody serves fail after `deadPeerTimeoutMs`; a peer that comes back in time serves them; a slow
 * but live peer is waited for; a removed segment fails every call at once; `abort()` ends them.
 * Real segment, served from this process (a port its peer left has no live owner).
 */
import { ArchipelagoError } from '@archipelago/libxseg';
import { Segment } from '@archipelago/libxseg/segment';
import { afterEach, describe, expect, it } from 'vitest';
import { PEER_WATCH_MS, PeerClient, type PeerClientOptions } from './clients/client.js';

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
