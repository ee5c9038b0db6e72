import { join } from 'node:path';
import { blockerConformance } from '@archipelago/blocker/test';
import { encodeTargetPayload, Op, XF, XS } from '@archipelago/libxseg';
import type { Segment } from '@archipelago/libxseg/segment';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SegmentBlocker } from './clients/segment-blocker.js';
import type { PeerOptions } from './options.js';
import { decodeError, PeerOp } from './protocol/wire.js';
import { peerHarness } from './test-peers.js';

const PORT = 7;
const h = peerHarness('peertest', { nrOps: 32, segment: { dynports: 16, ports: 64, sizeMiB: 96 } });
const opts: PeerOptions = {
  ...h.base('blockerb', PORT),
  blocker: { type: 'file_blocker', dir: join(h.dir, 'blocks') },
};
let seg: Segment;

beforeAll(async () => {
  await h.start(opts);
  seg = h.join();
});

afterAll(() => h.teardown());

blockerConformance({
  name: 'segment→file',
  factory: async (o) =>
    new SegmentBlocker({ segment: seg, port: PORT, ...(o?.identity ? { identity: o.identity } : {}) }),
});

describe('blocker peer: malformed requests', () => {
  it('answers unknown ops, bad payloads and bad names with error replies, and keeps serving', async () => {
    const port = seg.bindDynamicPort();
    try {
      const cases = [
        { op: 63, target: 'x', expect: 'ENOTSUP' },
        { op: 0xfffff, target: 'x', expect: 'ENOTSUP' },
        { op: Op.COPY, target: 'dst', data: Buffer.from('garbage'), expect: 'EINVAL' },
        { op: Op.COPY, target: 'dst', data: Buffer.alloc(260, 0xff), expect: 'EINVAL' },
        { op: Op.READ, target: '../../etc/passwd', size: 10, expect: 'EINVAL_NAME' },
        { op: Op.WRITE, target: 'a/b', data: Buffer.from('x'), expect: 'EINVAL_NAME' },
        { op: Op.ACQUIRE, target: 'lk', data: Buffer.alloc(200, 0x41), expect: 'EINVAL' },
        { op: PeerOp.LIST, target: '', data: Buffer.alloc(10), size: 1 << 30, expect: 'EINVAL' },
      ] as const;
      for (const c of cases) {
        const r = await port.call({
          dst: PORT,
          op: c.op,
          target: c.target,
          ...('data' in c ? { data: c.data } : {}),
          ...('size' in c ? { size: c.size, reserve: 16 } : {}),
        });
        expect(r.ok, `op ${c.op}`).toBe(false);
        expect(r.state & XS.FAILED).toBeTruthy();
        expect(decodeError(Buffer.from(r.data), 'x').code, `op ${c.op}`).toBe(c.expect);
        r.release();
      }
      const b = new SegmentBlocker({ segment: seg, port: PORT });
      await b.write('still-alive', 0, encodeTargetPayload('ok'));
      expect(await b.info('still-alive')).toMatchObject({ size: 260 });
      await b.close();
    } finally {
      port.close();
    }
  });
});

describe('SegmentBlocker: durable writes', () => {
  it("sends a durable write (the composer's FUA) with XF_FUA, a plain one without", async () => {
    const SERVE = 9;
    const srv = seg.bindPort(SERVE);
    const flags: number[] = [];
    srv.onRequest((req) => {
      flags.push(req.flags);
      srv.respond(req, { serviced: req.size });
    });
    const b = new SegmentBlocker({ segment: seg, port: SERVE });
    try {
      await b.write('fua', 0, Buffer.from('a'), { durable: true });
      await b.write('fua', 0, Buffer.from('b'));
      await b.write('fua', 0, Buffer.from('c'), { durable: false });
      expect(flags.map((f) => (f & XF.FUA) !== 0)).toEqual([true, false, false]);
    } finally {
      await b.close();
      srv.close();
    }
  });
});
