/**
 * Locks over the segment, beyond the conformance suite (segment-blocker.test.ts): the lock a
 * SegmentBlocker takes records the client's process (what `cat <vol>_lock` shows), never the
 * blocker peer's; malformed lock requests get error replies; a fenced error of the peer's blocker
 * crosses intact; and across a kill -9 of the peer, idempotent lock calls are retried while a
 * break is not.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { currentProcess, type LockProcess, type WriteOptions } from '@archipelago/blocker';
import { MemoryBlocker, MemoryStore } from '@archipelago/blocker/test';
import { FileBlocker } from '@archipelago/blocker-file';
import { ArchipelagoError, Op, XF, XS } from '@archipelago/libxseg';
import type { Segment } from '@archipelago/libxseg/segment';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SegmentBlocker } from './clients/segment-blocker.js';
import type { PeerOptions } from './options.js';
import { encodeLockArgs } from './protocol/lock-wire.js';
import { decodeError, encodeError, fromJson, PeerOp } from './protocol/wire.js';
import { createBlockerService } from './servers/blocker-peer.js';
import { peerHarness } from './test-peers.js';

const PORT = 7;
const h = peerHarness('lockwire', { nrOps: 32, segment: { dynports: 16, ports: 64, sizeMiB: 64 } });
const blocks = join(h.dir, 'blocks');
const opts: PeerOptions = { ...h.base('blockerb', PORT), blocker: { type: 'file_blocker', dir: blocks } };
let seg: Segment;
/** The lock file of `name`, as `cat` shows it. */
const lockFile = (name: string) => readFileSync(new FileBlocker({ dir: blocks }).lockPath(name), 'utf8');

beforeAll(async () => {
  await h.start(opts);
  seg = h.join();
});

afterAll(() => h.teardown());

const client = (o: { identity?: string; process?: LockProcess } = {}) =>
  new SegmentBlocker({ segment: seg, port: PORT, identity: o.identity ?? 'host1_client', ...o });

/** A process of another host (known by its lease only). */
const ELSEWHERE: LockProcess = { host: 'elsewhere', boot: 'b', pid: 4242, start: '1' };

/** Runs `fn` with clients A and B (identities host1_a, host1_b); A holds lock `name` for ELSEWHERE. */
async function withHeldElsewhere(
  name: string,
  leaseMs: number,
  fn: (a: SegmentBlocker, b: SegmentBlocker) => Promise<void>,
): Promise<void> {
  const a = client({ identity: 'host1_a' });
  const b = client({ identity: 'host1_b' });
  try {
    await a.acquire(name, { as: ELSEWHERE, leaseMs });
    await fn(a, b);
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
}

/** Sends one raw request to the peer; resolves with its JSON answer or rejects with its error. */
async function raw(op: number, target: string, data: Buffer, flags = 0): Promise<unknown> {
  const port = seg.bindDynamicPort();
  try {
    const r = await port.call({ dst: PORT, op, target, data, flags });
    try {
      if (!r.ok) throw decodeError(Buffer.from(r.data), 'raw');
      return r.serviced === 0 ? undefined : fromJson(r.data.subarray(0, r.serviced), 'raw');
    } finally {
      r.release();
    }
  } finally {
    port.close();
  }
}

describe('locks over the segment', () => {
  it("records the client's process in the lock file, never the blocker peer's", async () => {
    const b = client();
    try {
      const r = await b.acquire('vol1', { leaseMs: 60_000 });
      expect(r).toEqual({ took: true, previous: null, tookOver: null });
      const text = lockFile('vol1');
      const [owner, rec] = text.split('\n');
      expect(owner).toBe('host1_client');
      const held = JSON.parse(rec as string) as { pid: number; expires: number };
      expect(held.pid).toBe(process.pid);
      expect(held.pid).not.toBe(h.children.get('blockerb')?.pid);
      expect(held.expires).toBeGreaterThan(Date.now() + 50_000);
      expect((await b.lockInfo('vol1'))?.process).toEqual(currentProcess());
      // A renewal keeps the record the client's, and says when the lease ends now.
      const renewed = await b.renew('vol1', { leaseMs: 5_000 });
      expect(renewed.process).toEqual(currentProcess());
      expect(renewed.expires).toBeLessThan(Date.now() + 6_000);
      await b.release('vol1');
    } finally {
      await b.close();
    }
  });

  it('holds a lock for the process a client names (`process`, or `as` of a call)', async () => {
    const endpoint: LockProcess = { ...currentProcess(), pid: process.ppid, start: 'x' };
    const b = client({ process: endpoint });
    try {
      await b.acquire('vol2');
      expect((await b.lockInfo('vol2'))?.process).toEqual(endpoint);
      const other: LockProcess = { ...endpoint, pid: 1 };
      await b.acquire('vol3', { as: other, leaseMs: 1000 });
      expect(await b.renew('vol3', { as: other })).toMatchObject({ process: other });
      await expect(b.renew('vol3')).rejects.toMatchObject({ code: 'ELOCKED', details: { lost: true } });
    } finally {
      await b.close();
    }
  });

  it("keeps the older wire's bare identity: a host hold", async () => {
    const r = (await raw(Op.ACQUIRE, 'vol4', Buffer.from('host1_old'), XF.NOSYNC)) as { took: boolean };
    expect(r.took).toBe(true);
    expect(lockFile('vol4')).toBe('host1_old\n');
    const info = await raw(PeerOp.LOCKINFO, 'vol4', Buffer.alloc(0));
    expect(info).toEqual({ owner: 'host1_old', process: null, expires: null });
    await raw(Op.RELEASE, 'vol4', Buffer.from('host1_old'));
    expect(await raw(PeerOp.LOCKINFO, 'vol4', Buffer.alloc(0))).toBeNull();
  });

  it('answers malformed lock requests with EINVAL (and an unknown break with EIO), and keeps serving', async () => {
    const me = currentProcess();
    const cases: [number, unknown, string, RegExp][] = [
      [Op.ACQUIRE, { identity: 'x' }, 'EINVAL', /never held for the blocker peer/],
      [Op.ACQUIRE, { identity: 'x', hold: 'process' }, 'EINVAL', /"as"/],
      [Op.ACQUIRE, { identity: 'x', as: { ...me, pid: -1 } }, 'EINVAL', /"as" must be a process/],
      [Op.ACQUIRE, { identity: 'x', hold: 'mine', as: me }, 'EINVAL', /"hold"/],
      [Op.ACQUIRE, { identity: 'x', as: me, leaseMs: 1.5 }, 'EINVAL', /"leaseMs"/],
      [Op.ACQUIRE, { identity: 'x'.repeat(129), hold: 'host' }, 'EINVAL', /at most 128 bytes/],
      [PeerOp.RENEW, { identity: 'x' }, 'EINVAL', /"as"/],
      [PeerOp.BREAK, { identity: 'x', waitMs: -5 }, 'EINVAL', /"waitMs"/],
      [PeerOp.BREAK, { identity: 'x', join: true }, 'EIO', /no break of it/],
    ];
    for (const [op, args, code, message] of cases) {
      const e = await raw(op, 'vol5', encodeLockArgs(args as never)).then(
        () => null,
        (err: unknown) => err,
      );
      expect(e, `${op} ${JSON.stringify(args)}`).toMatchObject({ code, message });
    }
    await expect(raw(Op.ACQUIRE, 'vol5', Buffer.from('{"identity":'))).rejects.toMatchObject({
      code: 'EINVAL',
      message: /malformed JSON/,
    });
    const b = client();
    try {
      expect((await b.acquire('vol5')).took).toBe(true);
      await b.release('vol5');
    } finally {
      await b.close();
    }
  });

  it('answers ADD_CLIENT and REMOVE_CLIENT with ENOTSUP: a file blocker cuts off no clients', async () => {
    const a = client({ identity: 'host1_addclient' });
    try {
      await a.acquire('addclient');
      await expect(a.addClient('addclient', '10.0.0.9:0/1')).rejects.toMatchObject({
        code: 'ENOTSUP',
        message: /^addClient addclient: a .* cuts off no clients/,
      });
      await expect(a.removeClient('addclient', '10.0.0.9:0/1')).rejects.toMatchObject({
        code: 'ENOTSUP',
        message: /^removeClient addclient: a .* cuts off no clients/,
      });
      await expect(
        raw(PeerOp.ADD_CLIENT, 'addclient', encodeLockArgs({ identity: 'host1_addclient', addr: 'a b' })),
      ).rejects.toMatchObject({ code: 'EINVAL' });
      await a.release('addclient');
    } finally {
      await a.close();
    }
  });

  it('breakLock without onWait waits for the lease in the peer, in one call', () =>
    withHeldElsewhere('vol6', 300, async (_a, b) => {
      const t0 = Date.now();
      const report = await b.breakLock('vol6');
      expect(report).toMatchObject({
        previous: { owner: 'host1_a', process: ELSEWHERE },
        fenced: 'its lease ran out',
      });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(200);
      expect(await b.lockInfo('vol6')).toBeNull();
    }));
});

describe('a fenced blocker over the segment', () => {
  /** A blocker whose client was blocklisted: every write fails as RadosBlocker's do then. */
  class Fenced extends MemoryBlocker {
    override async write(_n: string, _o: number, _d: Uint8Array, _w?: WriteOptions): Promise<void> {
      throw new ArchipelagoError('EIO', 'this client was blocklisted (fenced) by host2', {
        details: { fenced: true, addr: '10.0.0.1:0/123', epoch: 7n },
      });
    }
  }

  it('crosses with its code, message and details, and is not retried', async () => {
    const SERVE = 9;
    const service = createBlockerService(new Fenced({ store: new MemoryStore() }), () => {
      throw new Error('no lockers here');
    });
    const srv = seg.bindPort(SERVE);
    srv.onRequest((req) => {
      service.serve(req).then(
        (r) => srv.respond(req, r),
        (e: unknown) => srv.respond(req, { state: XS.FAILED, serviced: 0, data: encodeError(e) }),
      );
    });
    const b = new SegmentBlocker({ segment: seg, port: SERVE });
    try {
      const e = await b.write('obj', 0, Buffer.from('x')).catch((err: unknown) => err);
      expect(e).toBeInstanceOf(ArchipelagoError);
      expect(e).toMatchObject({
        code: 'EIO',
        message: 'this client was blocklisted (fenced) by host2',
        details: { fenced: true, addr: '10.0.0.1:0/123', epoch: 7n },
      });
      expect(b.retries).toBe(0);
    } finally {
      await b.close();
      srv.close();
      await service.close();
    }
  });
});

describe('lock calls when the blocker peer dies', () => {
  it('sends acquire, renew and lockInfo again after an answerless failure; never a break', async () => {
    // A peer that fails the first request of each op as the segment fails back the requests of a
    // dead peer (XS_FAILED, no answer), then serves: what a client sees across a restart.
    const SERVE = 10;
    const store = new MemoryStore();
    const service = createBlockerService(
      new MemoryBlocker({ store, identity: 'peer_main' }),
      (identity) => new MemoryBlocker({ store, identity }),
    );
    const failed = new Set<number>();
    const srv = seg.bindPort(SERVE);
    srv.onRequest((req) => {
      if (!failed.has(req.op)) {
        failed.add(req.op);
        srv.respond(req, { state: XS.FAILED, serviced: 0 });
        return;
      }
      service.serve(req).then(
        (r) => srv.respond(req, r),
        (e: unknown) => srv.respond(req, { state: XS.FAILED, serviced: 0, data: encodeError(e) }),
      );
    });
    const a = new SegmentBlocker({ segment: seg, port: SERVE, identity: 'host1_a' });
    try {
      expect(await a.acquire('vol7')).toMatchObject({ took: true });
      expect(a.retries).toBe(1);
      expect((await a.renew('vol7')).process).toEqual(currentProcess());
      expect(await a.lockInfo('vol7')).toMatchObject({ owner: 'host1_a', process: currentProcess() });
      expect(a.retries).toBe(3);
      const e = await a.breakLock('vol7').catch((err: unknown) => err);
      expect(e).toMatchObject({ code: 'EIO', details: { failedBySegment: true } });
      expect(a.retries).toBe(3);
      expect(await a.lockOwner('vol7')).toBe('host1_a');
    } finally {
      await a.close();
      srv.close();
      await service.close();
    }
  });

  it('a break the peer was waiting in when killed fails, and is not sent again', () =>
    withHeldElsewhere('vol8', 5_000, async (a, b) => {
      const waits: number[] = [];
      const broken = b.breakLock('vol8', { onWait: (_what, ms) => waits.push(ms) }).catch((e: unknown) => e);
      // The peer took the lock from the holder and waits out its lease.
      while (waits.length === 0) await new Promise((r) => setTimeout(r, 20));
      expect(await b.lockOwner('vol8')).toBe('host1_b');
      const peer = h.children.get('blockerb');
      peer?.kill('SIGKILL');
      await new Promise<void>((r) => peer?.once('exit', () => r()));
      await h.start(opts);
      expect(await broken).toMatchObject({ code: 'EIO', details: { failedBySegment: true } });
      // Not sent again: the lock is as the dead peer left it, held for its (dead) process.
      const left = await b.lockInfo('vol8');
      expect(left).toMatchObject({ owner: 'host1_b', process: { pid: peer?.pid } });
      // Which the next acquire of this host takes over, but only once the lease of the holder the
      // break took it from has run out (notBefore): that holder may still be writing until then.
      expect(left?.notBefore).toBeGreaterThan(Date.now());
      await expect(a.acquire('vol8')).rejects.toMatchObject({ code: 'ELOCKED' });
      const t0 = Date.now();
      expect(await a.acquire('vol8', { wait: true, timeoutMs: 10_000 })).toMatchObject({
        took: true,
        tookOver: /is gone/,
      });
      expect(Date.now()).toBeGreaterThanOrEqual((left?.notBefore ?? t0) - 50);
      await a.release('vol8');
    }));
});
