// A peer process for the multi-process segment tests. Runs the *built* facade (dist/), since a
// forked plain node cannot load TypeScript. Driven by IPC messages from the test.
import { Segment } from '../../../dist/segment/index.js';

let seg;
let port;
let client;
const nat = (s) => s[Object.getOwnPropertySymbols(s)[0]];
process.on('message', async (m) => {
  try {
    if (m.cmd === 'serve') {
      seg = Segment.join(m.spec, m.spin ?? {});
      port = seg.bindPort(m.port);
      let accepted = 0;
      port.onRequest((req) => {
        accepted++;
        if (m.mode === 'hold') {
          process.send({ ev: 'accepted', accepted });
          return; // never answer: the test kills us
        }
        if (m.mode === 'slow') {
          // answer later, from a timer: the sender's spin gives up and its loop sleeps
          setTimeout(() => {
            req.data.fill(req.offset & 0xff);
            port.respond(req, { serviced: req.size });
          }, m.delay ?? 200);
          return;
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
      if (m.fixedSpin) nat(seg).debugFixedSpin(m.port, true);
      process.send({ ev: 'ready', pid: process.pid, recovered: port.recovered });
    } else if (m.cmd === 'call') {
      // a client that spins (its whole spinUs when fixedSpin) for the reply to one request
      seg ??= Segment.join(m.spec, m.spin ?? {});
      client = seg.bindDynamicPort();
      client.onReply(() => {});
      // submit once the message is out (a spinning loop would hold it back)
      process.send({ ev: 'called', port: client.number }, () => {
        client.submit({ dst: m.dst, op: 1, offset: 5, size: 4096 });
        // the spin starts when this callback returns, right before the loop would sleep
        if (m.fixedSpin) nat(seg).debugFixedSpin(client.number, true);
      });
    } else if (m.cmd === 'stats') {
      process.send({ ev: 'stats', stats: (port ?? client)?.stats() ?? null, cpu: process.cpuUsage() });
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
