/**
 * The blocker conformance suite through the segment: SegmentBlocker (this process) → a blocker
 * peer in a child process (the built dist/main.js) → FileBlocker. Also: malformed requests get
 * error replies and the peer keeps serving.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { blockerConformance } from '@archipelago/blocker/test';
import { encodeTargetPayload, Op, XS } from '@archipelago/libxseg';
import { Segment } from '@archipelago/libxseg/segment';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PeerOptions } from './options.js';
import { SegmentBlocker } from './segment-blocker.js';
import { decodeError, PeerOp } from './wire.js';

const MAIN = resolve(import.meta.dirname, '../dist/main.js');
const PORT = 7;
const dir = mkdtempSync(join(tmpdir(), 'archip-peer-'));
const name = `peertest${process.pid}x${Date.now() % 100000}`;
const opts: PeerOptions = {
  role: 'blockerb',
  segment: { name, dynports: 16, ports: 64, sizeMiB: 96 },
  portStart: PORT,
  portEnd: PORT,
  nrOps: 32,
  pidfile: join(dir, 'run/blockerb.pid'),
  logfile: join(dir, 'run/blockerb.log'),
  logLevel: 2,
  blocker: { type: 'file_blocker', dir: join(dir, 'blocks') },
};
let child: ChildProcess;
let seg: Segment;

beforeAll(async () => {
  child = spawn(process.execPath, [MAIN], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, ARCHIPELAGO_PEER: JSON.stringify(opts) },
  });
  const end = Date.now() + 5000;
  while (!existsSync(opts.pidfile)) {
    if (Date.now() > end || child.exitCode !== null) throw new Error('the blocker peer did not start');
    await new Promise((r) => setTimeout(r, 20));
  }
  seg = Segment.join(name);
});

afterAll(async () => {
  seg?.close();
  if (child && child.exitCode === null) {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  }
  try {
    Segment.destroy(name);
  } catch {
    // gone
  }
  rmSync(dir, { recursive: true, force: true });
});

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
      expect(await b.info('still-alive')).toEqual({ size: 260 });
      await b.close();
    } finally {
      port.close();
    }
  });
});
