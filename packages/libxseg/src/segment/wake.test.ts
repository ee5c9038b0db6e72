// Wake-up paths of the segment between real processes: doorbell wake-ups of a sleeping loop,
// the bounded spins (replies due, linger after serving), that nothing spins while idle, and
// peers SIGKILLed in the middle of a spin. No timing assertions: only what happened (counters,
// replies, CPU used while idle with a generous bound).
import { describe, expect, it } from 'vitest';
import { Op } from '../protocol.js';
import { harness, killed, sleep, until } from './__fixtures__/harness.js';
import { type JoinOptions, Segment, type XsegRequest } from './index.js';

const { fresh, peer, serve } = harness('xsegwake');
const portOf = (seg: Segment, n: number) => seg.report().ports.find((p) => p.port === n);

/** Our segment (default spins `spin`), a peer serving port 1 (`mode`, `opts`) and a client port of ours. */
async function withServer(spin: JoinOptions, mode = 'echo', opts: Record<string, unknown> = {}) {
  const spec = fresh();
  const seg = Segment.create(spec, spin);
  const srv = await serve(spec, 1, mode, opts);
  return { spec, seg, srv, cli: seg.bindDynamicPort().unref() };
}

describe('wake-ups between processes', () => {
  it('a request wakes a peer whose loop has been asleep, and its reply wakes ours', async () => {
    const noSpin = { spinUs: 0, lingerUs: 0 };
    const { seg, srv, cli } = await withServer(noSpin, 'echo', { spin: noSpin });
    for (let round = 0; round < 3; round++) {
      await sleep(150); // both loops are idle in epoll, armed
      expect(portOf(seg, 1)?.armed).toBe(true);
      const r = await cli.call({ dst: 1, op: Op.READ, offset: round, size: 4096 });
      expect(r.ok).toBe(true);
      expect(r.data[4095]).toBe(round);
      r.release();
    }
    const mine = cli.stats();
    const theirs = (await srv.stats()).stats;
    // no spinning was allowed: every request and every reply came through a doorbell
    expect(mine?.spins).toBe(0);
    // (our loop may have been awake for other reasons when a reply came: at least one woke it)
    expect(mine?.wakes).toBeGreaterThanOrEqual(1);
    expect(theirs.lingers).toBe(0);
    expect(theirs.wakes).toBeGreaterThanOrEqual(3);
    expect(mine?.outstanding).toBe(0);
    seg.close();
  });

  it('a reply slower than the spin budget arrives through the doorbell after the spin gives up', async () => {
    const { seg, cli } = await withServer({ spinUs: 50 }, 'slow', { delay: 100 });
    for (let i = 0; i < 3; i++) {
      const r = await cli.call({ dst: 1, op: Op.READ, offset: 7, size: 512 });
      expect(r.ok).toBe(true);
      expect(r.data[0]).toBe(7);
      r.release();
    }
    const s = cli.stats();
    expect(s?.spins).toBeGreaterThanOrEqual(1); // it did try
    expect(s?.hits).toBe(0); // the spin gave up long before the 100 ms reply
    // Each reply came through the doorbell, or (on a loaded machine, the loop woken late) was
    // found by the drain of an earlier wake-up: never by the spin.
    expect(s?.wakes).toBeGreaterThanOrEqual(1);
    seg.close();
  });

  it('spins for replies while requests are outstanding, then sleeps: no CPU used while idle', async () => {
    const spins = { spinUs: 50, lingerUs: 50 };
    const { seg, srv, cli } = await withServer(spins, 'echo', { spin: spins });
    for (let i = 0; i < 300; i++) {
      const r = await cli.call({ dst: 1, op: Op.READ, offset: i, size: 4096 });
      expect(r.ok).toBe(true);
      expect(r.data[0]).toBe(i & 0xff);
      r.release();
    }
    const s = cli.stats();
    expect(s?.outstanding).toBe(0);
    expect(s?.spins).toBeGreaterThan(0);
    // every reply was found by a spin or a doorbell (or a drain that ran anyway)
    expect((s?.hits ?? 0) + (s?.wakes ?? 0)).toBeLessThanOrEqual(300);
    const before = await srv.stats();
    const myCpu = process.cpuUsage();
    await sleep(300);
    const after = await srv.stats();
    const mine = process.cpuUsage(myCpu);
    // idle: the peer lingered at most once after its last drain, then slept
    expect(after.stats.lingers - before.stats.lingers).toBeLessThanOrEqual(1);
    expect(after.stats.lingerUs - before.stats.lingerUs).toBeLessThan(1000);
    const peerCpuUs = after.cpu.user + after.cpu.system - (before.cpu.user + before.cpu.system);
    expect(peerCpuUs).toBeLessThan(100_000); // a spinning loop would burn ~300 000 µs here
    expect(mine.user + mine.system).toBeLessThan(150_000);
    expect(cli.stats()?.spins).toBe(s?.spins); // nothing outstanding: no more spins
    expect(portOf(seg, 1)?.armed).toBe(true);
    expect(portOf(seg, cli.number)?.armed).toBe(true);
    seg.close();
  });

  it('a server SIGKILLed in the middle of a linger leaves no lock, and its next incarnation serves what queued meanwhile', async () => {
    // the peer spins its whole 1 s linger after every drain
    const { spec, seg, srv, cli } = await withServer({}, 'echo', {
      spin: { lingerUs: 1_000_000 },
      fixedSpin: true,
    });
    const r = await cli.call({ dst: 1, op: Op.READ, offset: 1, size: 64 });
    expect(r.ok).toBe(true);
    r.release();
    // it is spinning now: awake, so disarmed
    await sleep(50);
    expect(portOf(seg, 1)?.armed).toBe(false);
    srv.child.kill('SIGKILL');
    await killed(srv.child);
    const rep = seg.report();
    expect(rep.locks.filter((l) => l.ownerPid !== 0)).toEqual([]);
    // queued for the dead peer (nobody to ring: it was disarmed)
    const queued = cli.call({ dst: 1, op: Op.READ, offset: 2, size: 64 });
    await sleep(50);
    expect(portOf(seg, 1)?.requestQueue).toBe(1);
    await serve(spec, 1);
    const q = await queued;
    expect(q.ok).toBe(true);
    expect(q.data[0]).toBe(2);
    q.release();
    seg.close();
  });

  it('a client SIGKILLed while spinning for its reply: the reply is answered into its port and reclaimed', async () => {
    const spec = fresh();
    const seg = Segment.create(spec);
    const held: XsegRequest[] = [];
    const srv = seg.bindPort(1).onRequest((req) => held.push(req));
    const cli = peer();
    await cli.next('started');
    // spins its whole 1 s for the reply, which we hold back
    cli.child.send({ cmd: 'call', spec, dst: 1, spin: { spinUs: 1_000_000 }, fixedSpin: true });
    const { port } = (await cli.next('called')) as unknown as { port: number };
    await until(() => held.length === 1);
    await until(() => portOf(seg, port)?.armed === false, 5000); // spinning (disarmed)
    cli.child.kill('SIGKILL');
    await killed(cli.child);
    const req = held[0] as XsegRequest;
    req.data.fill(1);
    srv.respond(req); // nobody to wake, nothing to wait for
    expect(portOf(seg, port)?.replyQueue).toBe(1);
    expect(seg.report().locks.filter((l) => l.ownerPid !== 0)).toEqual([]);
    // the dead client's dynamic port is reused, and its stale reply returned to the pool
    const again = seg.bindDynamicPort();
    expect(again.number).toBe(port);
    expect(again.recovered.freed).toBe(1);
    const rep = seg.report();
    expect(rep.requests.free).toBe(rep.requests.total);
    expect(rep.heap.used).toBe(0);
    seg.close();
  });

  it('serves and replies within one process (the doorbell rings our own loop)', async () => {
    const spec = fresh();
    const seg = Segment.create(spec, { spinUs: 0, lingerUs: 0 });
    const srv = seg.bindPort(2).onRequest((req) => {
      setTimeout(() => srv.respond(req, { data: Buffer.from('late') }), 20);
    });
    const cli = seg.bindDynamicPort().unref();
    srv.unref();
    const replies = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        cli.call({ dst: 2, op: Op.WRITE, offset: i, size: 4, reserve: 4 }),
      ),
    );
    for (const r of replies) {
      expect(r.ok).toBe(true);
      expect(r.data.toString()).toBe('late');
      r.release();
    }
    // (found by the loop's check before it sleeps, or by the doorbell: either is fine here)
    expect(cli.stats()?.outstanding).toBe(0);
    seg.close();
  });
});
