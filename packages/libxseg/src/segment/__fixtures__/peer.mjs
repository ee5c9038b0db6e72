// A peer process for the multi-process segment tests. Runs the *built* facade (dist/), since a
// forked plain node cannot load TypeScript. Driven by IPC messages from the test.
import { Segment } from '../../../dist/segment/index.js';

let seg;
let port;
process.on('message', async (m) => {
  try {
    if (m.cmd === 'serve') {
      seg = Segment.join(m.spec);
      port = seg.bindPort(m.port);
      let accepted = 0;
      port.onRequest((req) => {
        accepted++;
        if (m.mode === 'hold') {
          process.send({ ev: 'accepted', accepted });
          return; // never answer: the test kills us
        }
        if (req.op === 1) {
          // read: fill in place with a pattern derived from the offset
          req.data.fill(req.offset & 0xff);
          port.respond(req, { serviced: req.size });
        } else if (req.op === 2) {
          // write: answer with the byte sum so the sender can check what arrived
          let sum = 0;
          for (let i = 0; i < req.data.length; i += 4096) sum += req.data[i];
          port.respond(req, { serviced: req.data.length, data: Buffer.from(String(sum)) });
        } else {
          port.respond(req, { state: 2, serviced: 0 });
        }
      });
      process.send({ ev: 'ready', pid: process.pid, recovered: port.recovered });
    } else if (m.cmd === 'holdlock') {
      seg ??= Segment.join(m.spec);
      seg[Object.getOwnPropertySymbols(seg)[0]].debugHoldLock(m.which, m.port ?? 0);
      process.send({ ev: 'locked', pid: process.pid });
    } else if (m.cmd === 'exit') {
      seg?.close();
      process.exit(0);
    }
  } catch (e) {
    process.send({ ev: 'error', code: e.code, message: e.message });
  }
});
process.send({ ev: 'started', pid: process.pid });
