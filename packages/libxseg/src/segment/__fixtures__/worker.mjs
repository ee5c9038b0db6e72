// A worker_thread peer for the per-environment test: a second Node.js environment in the test's
// own process, loading the same addon file. Runs the *built* facade (dist/), as peer.mjs does.
// It serves static port `serve` (READ: fills the data with offset & 0xff) and calls the port the
// test names from a dynamic port of its own; messages go through parentPort.
import { parentPort, workerData } from 'node:worker_threads';
import { Segment } from '../../../dist/segment/index.js';
import { loadAddon } from '../../../dist/segment/native.js';

const seg = Segment.join(workerData.spec);
const native = seg[Object.getOwnPropertySymbols(seg)[0]];
const server = seg.bindPort(workerData.serve).onRequest((req) => {
  req.data.fill(req.offset & 0xff);
  server.respond(req, { serviced: req.size });
});
const client = seg.bindDynamicPort();
parentPort.on('message', async (m) => {
  try {
    if (m.cmd === 'call') {
      const r = await client.call({ dst: m.dst, op: 1, offset: m.offset, size: m.size });
      parentPort.postMessage({
        ev: 'reply',
        ok: r.ok,
        first: r.data[0],
        last: r.data[r.data.length - 1],
        length: r.data.length,
      });
      r.release();
    }
  } catch (e) {
    parentPort.postMessage({ ev: 'error', message: e.message });
  }
});
parentPort.postMessage({
  ev: 'ready',
  client: client.number,
  // the segment object was made by this environment's own NativeSegment class
  ownClass: native.constructor === loadAddon().NativeSegment,
});
