// The addon in two Node.js environments of one process: the test's thread and a worker_thread
// both load it, join the same segment, serve a port and call each other's; the worker is then
// terminated while its port is still served, and this thread carries on (and keeps making
// segment objects: each environment constructs them through its own class).
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { Op } from '../protocol.js';
import { harness } from './__fixtures__/harness.js';
import { Segment } from './index.js';
import { loadAddon } from './native.js';

const { fresh } = harness('xsegworker');
const WORKER = new URL('./__fixtures__/worker.mjs', import.meta.url);
const nativeOf = (s: Segment) =>
  (s as unknown as Record<symbol, object>)[Object.getOwnPropertySymbols(s)[0] as symbol];

/** A message of kind `ev` from the worker (an `error` one throws). */
async function next(w: Worker, ev: string): Promise<Record<string, unknown>> {
  const [m] = (await once(w, 'message')) as [Record<string, unknown>];
  if (m.ev === 'error') throw new Error(`worker: ${String(m.message)}`);
  expect(m.ev).toBe(ev);
  return m;
}

/** Port `port` of `seg` answers READs with the data filled with `offset & 0xff`. */
function serveReads(seg: Segment, port: number) {
  const p = seg.bindPort(port).onRequest((req) => {
    req.data.fill(req.offset & 0xff);
    p.respond(req, { serviced: req.size });
  });
  return p;
}

describe('the addon in a worker_thread (a second environment)', () => {
  it('joins, serves and calls alongside this thread, and is terminated cleanly (three times)', async () => {
    const spec = fresh('4:16:64:12');
    const seg = Segment.create(spec);
    serveReads(seg, 1).unref();
    const cli = seg.bindDynamicPort().unref();

    for (let round = 0; round < 3; round++) {
      const worker = new Worker(WORKER, { workerData: { spec, serve: 2 } });
      const errors: Error[] = [];
      worker.on('error', (e) => errors.push(e));
      const ready = await next(worker, 'ready');
      expect(ready.ownClass).toBe(true);

      for (let i = 0; i < 10; i++) {
        // the worker calls our port...
        worker.postMessage({ cmd: 'call', dst: 1, offset: i, size: 4096 });
        expect(await next(worker, 'reply')).toEqual({
          ev: 'reply',
          ok: true,
          first: i,
          last: i,
          length: 4096,
        });
        // ...and we call the worker's
        const r = await cli.call({ dst: 2, op: Op.READ, offset: 100 + i, size: 512 });
        expect([r.ok, r.data.length, r.data[0], r.data[511]]).toEqual([true, 512, 100 + i, 100 + i]);
        r.release();
      }

      // While the worker lives, this thread still makes segment objects with its own class.
      const again = Segment.join(spec);
      expect(nativeOf(again).constructor).toBe(loadAddon().NativeSegment);
      again.close();

      // Terminated right after serving (its port's waiter still open, maybe mid-drain): the
      // environment's teardown stops the waiter, and nothing is left locked.
      expect(await worker.terminate()).toBe(1);
      expect(errors).toEqual([]);
      expect(seg.report().locks.filter((l) => l.ownerPid !== 0)).toEqual([]);
    }

    // This thread carries on: a new segment object, and round trips through both of them.
    const after = Segment.join(spec);
    const cli2 = after.bindDynamicPort().unref();
    for (const c of [cli, cli2]) {
      const r = await c.call({ dst: 1, op: Op.READ, offset: 7, size: 4096 });
      expect([r.ok, r.data[0], r.data[4095]]).toEqual([true, 7, 7]);
      r.release();
    }
    after.close();
    seg.close();
  });
});
