// The serving side of bench/xseg/run.mjs: one process, either an xseg port or a unix socket.
// READ fills `size` bytes of reply; WRITE reads the data it was sent and answers with no data.
import { createServer } from 'node:net';
import { Segment } from '../../packages/libxseg/dist/segment/index.js';

const [mode, where] = process.argv.slice(2);
const READ = 1;

function touch(buf) {
  let s = 0;
  for (let i = 0; i < buf.length; i += 4096) s += buf[i];
  return s;
}

if (mode === 'seg') {
  const seg = Segment.join(where);
  const port = seg.bindPort(1);
  port.onRequest((req) => {
    if (req.op === READ) req.data.fill(0x5a, 0, req.size);
    else touch(req.data);
    port.respond(req, { serviced: req.size });
  });
  process.on('message', () => {
    seg.close();
    process.exit(0);
  });
  process.send('ready');
} else {
  // Frames: request = u32 id, u32 op, u32 size, u32 datalen, data; reply = u32 id, u32 state, u32 len, data.
  const payload = Buffer.alloc(64 * 2 ** 20, 0x5a);
  const server = createServer((sock) => {
    sock.setNoDelay(true);
    let chunks = [];
    let have = 0;
    const take = (n) => {
      const all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, have);
      const out = all.subarray(0, n);
      const rest = all.subarray(n);
      chunks = rest.length ? [rest] : [];
      have = rest.length;
      return out;
    };
    let hdr = null;
    sock.on('data', (d) => {
      chunks.push(d);
      have += d.length;
      for (;;) {
        if (!hdr) {
          if (have < 16) return;
          const h = take(16);
          hdr = {
            id: h.readUInt32LE(0),
            op: h.readUInt32LE(4),
            size: h.readUInt32LE(8),
            datalen: h.readUInt32LE(12),
          };
        }
        if (have < hdr.datalen) return;
        const data = hdr.datalen ? take(hdr.datalen) : null;
        const r = Buffer.alloc(12);
        r.writeUInt32LE(hdr.id, 0);
        r.writeUInt32LE(1, 4);
        if (hdr.op === READ) {
          r.writeUInt32LE(hdr.size, 8);
          sock.write(r);
          sock.write(payload.subarray(0, hdr.size));
        } else {
          touch(data);
          r.writeUInt32LE(0, 8);
          sock.write(r);
        }
        hdr = null;
      }
    });
  });
  server.listen(where, () => process.send('ready'));
  process.on('message', () => process.exit(0));
}
