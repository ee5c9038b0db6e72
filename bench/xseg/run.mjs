#!/usr/bin/env node
// bench/xseg: the XSEG segment against a unix socket, same requests, one run (not a test).
//
//   pnpm build && node bench/xseg/run.mjs [--iters 5000] [--gib 4] [--depth 8]
//
// Round-trip latency (median µs, one request in flight) for 4 KiB and 512 KiB READs (the server
// produces the bytes: in place in shared memory, or written to the socket), and throughput
// (GB/s) for 4 MiB WRITEs with --depth in flight (the client produces the bytes: copied once
// into the segment, or written to the socket; the server reads them). JSON to bench/results/.
import { fork } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Segment } from '../../packages/libxseg/dist/segment/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : Number(process.argv[i + 1]);
};
const ITERS = arg('iters', 5000);
const GIB = arg('gib', 4);
const DEPTH = arg('depth', 8);
const READ = 1;
const WRITE = 2;
const KiB = 1024;
const MiB = 1024 * KiB;

const now = () => process.hrtime.bigint();
const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  return s[s.length >> 1];
};

async function server(mode, where) {
  const child = fork(join(here, 'server.mjs'), [mode, where], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  await new Promise((r, j) => {
    child.once('message', r);
    child.once('exit', j);
  });
  return child;
}

async function stop(child) {
  child.send('stop');
  await new Promise((r) => child.once('exit', r));
}

// ---- segment ----
async function benchSegment() {
  const name = `xsegbench-${process.pid}`;
  const spec = `posix:${name}:4:8:${Math.max(256, DEPTH * 4 * 2 + 64)}:12`;
  const seg = Segment.create(spec);
  const child = await server('seg', spec);
  const port = seg.bindDynamicPort().unref();
  const out = {};
  for (const size of [4 * KiB, 512 * KiB]) {
    const lat = [];
    for (let i = 0; i < ITERS + 200; i++) {
      const t = now();
      const r = await port.call({ dst: 1, op: READ, size });
      if (!r.ok || r.data[size - 1] !== 0x5a) throw new Error('bad reply');
      r.release();
      if (i >= 200) lat.push(Number(now() - t) / 1000);
    }
    out[`read${size / KiB}k_us`] = median(lat);
  }
  const src = Buffer.alloc(4 * MiB, 0xa5);
  const total = Math.round((GIB * 1024) / 4);
  const one = async () => {
    const p = port.prepare(4 * MiB);
    src.copy(p.data);
    const r = await p.call({ dst: 1, op: WRITE, size: 4 * MiB });
    if (!r.ok) throw new Error('write failed');
    r.release();
  };
  let sent = 0;
  const t0 = now();
  await Promise.all(
    Array.from({ length: DEPTH }, async () => {
      while (sent < total) {
        sent++;
        await one();
      }
    }),
  );
  out.write4m_GBps = (total * 4 * MiB) / (Number(now() - t0) / 1e9) / 1e9;
  await stop(child);
  seg.close();
  Segment.destroy(name);
  return out;
}

// ---- unix socket ----
async function benchSocket() {
  const path = join(tmpdir(), `xsegbench-${process.pid}.sock`);
  rmSync(path, { force: true });
  const child = await server('sock', path);
  const sock = connect(path);
  await new Promise((r) => sock.once('connect', r));
  sock.setNoDelay(true);
  let chunks = [];
  let have = 0;
  const waiting = new Map();
  let hdr = null;
  const take = (n) => {
    const all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, have);
    const o = all.subarray(0, n);
    const rest = all.subarray(n);
    chunks = rest.length ? [rest] : [];
    have = rest.length;
    return o;
  };
  sock.on('data', (d) => {
    chunks.push(d);
    have += d.length;
    for (;;) {
      if (!hdr) {
        if (have < 12) return;
        const h = take(12);
        hdr = { id: h.readUInt32LE(0), len: h.readUInt32LE(8) };
      }
      if (have < hdr.len) return;
      const data = hdr.len ? take(hdr.len) : Buffer.alloc(0);
      const w = waiting.get(hdr.id);
      waiting.delete(hdr.id);
      hdr = null;
      w(data);
    }
  });
  let nextId = 1;
  const call = (op, size, data) =>
    new Promise((resolve) => {
      const id = nextId++;
      waiting.set(id, resolve);
      const h = Buffer.alloc(16);
      h.writeUInt32LE(id, 0);
      h.writeUInt32LE(op, 4);
      h.writeUInt32LE(size, 8);
      h.writeUInt32LE(data ? data.length : 0, 12);
      sock.write(h);
      if (data) sock.write(data);
    });
  const out = {};
  for (const size of [4 * KiB, 512 * KiB]) {
    const lat = [];
    for (let i = 0; i < ITERS + 200; i++) {
      const t = now();
      const d = await call(READ, size);
      if (d.length !== size || d[size - 1] !== 0x5a) throw new Error('bad reply');
      if (i >= 200) lat.push(Number(now() - t) / 1000);
    }
    out[`read${size / KiB}k_us`] = median(lat);
  }
  const src = Buffer.alloc(4 * MiB, 0xa5);
  const total = Math.round((GIB * 1024) / 4);
  let sent = 0;
  const t0 = now();
  await Promise.all(
    Array.from({ length: DEPTH }, async () => {
      while (sent < total) {
        sent++;
        await call(WRITE, 4 * MiB, src);
      }
    }),
  );
  out.write4m_GBps = (total * 4 * MiB) / (Number(now() - t0) / 1e9) / 1e9;
  sock.destroy();
  await stop(child);
  rmSync(path, { force: true });
  return out;
}

const seg = await benchSegment();
const sock = await benchSocket();
const rows = [
  [
    '4 KiB read round trip, median µs',
    seg.read4k_us,
    sock.read4k_us,
    sock.read4k_us / seg.read4k_us,
    '≤ 20 µs',
  ],
  [
    '512 KiB read round trip, median µs',
    seg.read512k_us,
    sock.read512k_us,
    sock.read512k_us / seg.read512k_us,
    '',
  ],
  [
    `4 MiB write throughput (depth ${DEPTH}), GB/s`,
    seg.write4m_GBps,
    sock.write4m_GBps,
    seg.write4m_GBps / sock.write4m_GBps,
    '≥ 3 GB/s',
  ],
];
const fmt = (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(2));
console.log(`| measure | segment | unix socket | segment advantage | target |`);
console.log(`|---|---:|---:|---:|---|`);
for (const [m, a, b, r, t] of rows) console.log(`| ${m} | ${fmt(a)} | ${fmt(b)} | ${r.toFixed(2)}× | ${t} |`);
const result = {
  date: new Date().toISOString(),
  node: process.version,
  cpus: (await import('node:os')).cpus().length,
  iters: ITERS,
  gib: GIB,
  depth: DEPTH,
  segment: seg,
  unixSocket: sock,
  ratios: { read4k: rows[0][3], read512k: rows[1][3], write4m: rows[2][3] },
};
const dir = join(here, '..', 'results');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'xseg.json'), `${JSON.stringify(result, null, 2)}\n`);
console.log(`\nwrote bench/results/xseg.json`);
