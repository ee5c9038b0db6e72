#!/usr/bin/env node
// bench/xseg: the XSEG segment against a unix socket, same requests, one run (not a test).
//
//   pnpm build && flock /var/tmp/bench.lock node bench/xseg/run.mjs [--iters 20000] [--warmup 5000]
//                                                                  [--gib 4] [--depth 8]
//
// Round-trip latency (median µs, one request in flight) for 4 KiB and 512 KiB READs (the server
// produces the bytes: in place in shared memory, or written to the socket), and throughput
// (GB/s) for 4 MiB WRITEs with --depth in flight (the client produces the bytes: copied once
// into the segment, or written to the socket; the server reads them). The segment runs three
// times: with the default spins (replies due + linger after serving), with the reply spin only,
// and with no spinning at all (doorbell wake-ups only). JSON and markdown to bench/results/.
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
const ITERS = arg('iters', 20000);
// Untimed round trips before each latency series: V8 tiers the hot path up on background
// threads, which on 2 vCPUs compete with both processes for a few thousand round trips.
const WARMUP = arg('warmup', 5000);
const GIB = arg('gib', 4);
const DEPTH = arg('depth', 8);
const READ = 1;
const WRITE = 2;
const KiB = 1024;
const MiB = 1024 * KiB;

const now = () => process.hrtime.bigint();
const median = (a) => {
  const s = Float64Array.from(a).sort();
  return s[s.length >> 1];
};

// Latency series: WARMUP untimed round trips, then ITERS timed ones (µs, into a preallocated
// array). Each transport has its own small series function: a loop inlined in one large function
// made V8 recompile that whole function (25-50 ms of TurboFan on the other CPU, several times) in
// the middle of a series, which the two spinning processes felt as contention; and one series
// function shared by both transports, once optimised for the segment, slowed the socket's 512 KiB
// round trips about tenfold.

async function server(mode, where, env = {}) {
  const child = fork(join(here, 'server.mjs'), [mode, where], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, ...env },
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
// spin: { spinUs, lingerUs } for both processes (the server reads them from the environment).
async function benchSegment(spin) {
  const name = `xsegbench-${process.pid}`;
  const spec = `posix:${name}:4:8:${Math.max(256, DEPTH * 4 * 2 + 64)}:12`;
  const seg = Segment.create(spec, spin);
  const child = await server('seg', spec, {
    ARCHIPELAGO_XSEG_SPIN_US: String(spin.spinUs),
    ARCHIPELAGO_XSEG_LINGER_US: String(spin.lingerUs),
  });
  const port = seg.bindDynamicPort().unref();
  const out = {};
  async function segmentSeries(size) {
    const lat = new Float64Array(ITERS);
    for (let i = 0; i < ITERS + WARMUP; i++) {
      const t = now();
      const r = await port.call({ dst: 1, op: READ, size });
      if (!r.ok || r.data[size - 1] !== 0x5a) throw new Error('bad reply');
      r.release();
      if (i >= WARMUP) lat[i - WARMUP] = Number(now() - t) / 1000;
    }
    return median(lat);
  }
  for (const size of [4 * KiB, 512 * KiB]) {
    const before = { ...port.stats?.() };
    out[`read${size / KiB}k_us`] = await segmentSeries(size);
    const s = port.stats?.() ?? {};
    // how the client found its replies (all iterations, warm-up included)
    out[`read${size / KiB}k_client`] = {
      spinHits: s.hits - (before.hits ?? 0),
      doorbellWakes: s.wakes - (before.wakes ?? 0),
    };
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
  async function socketSeries(size) {
    const lat = new Float64Array(ITERS);
    for (let i = 0; i < ITERS + WARMUP; i++) {
      const t = now();
      const d = await call(READ, size);
      if (d.length !== size || d[size - 1] !== 0x5a) throw new Error('bad reply');
      if (i >= WARMUP) lat[i - WARMUP] = Number(now() - t) / 1000;
    }
    return median(lat);
  }
  for (const size of [4 * KiB, 512 * KiB]) out[`read${size / KiB}k_us`] = await socketSeries(size);
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

const { loadavg, cpus } = await import('node:os');
const load0 = loadavg();
const seg = await benchSegment({ spinUs: 50, lingerUs: 50 });
const segReplySpin = await benchSegment({ spinUs: 50, lingerUs: 0 });
const segNoSpin = await benchSegment({ spinUs: 0, lingerUs: 0 });
const sock = await benchSocket();
const load1 = loadavg();
const rows = [
  ['4 KiB read round trip, median µs', 'read4k_us', '≤ 20 µs', false],
  ['512 KiB read round trip, median µs', 'read512k_us', '', false],
  [`4 MiB write throughput (depth ${DEPTH}), GB/s`, 'write4m_GBps', '≥ 3 GB/s', true],
];
const fmt = (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(2));
const ratio = (k, higher) => (higher ? seg[k] / sock[k] : sock[k] / seg[k]);
const lines = [
  '| measure | segment | segment, reply spin only | segment, no spin | unix socket | segment advantage | target |',
  '|---|---:|---:|---:|---:|---:|---|',
  ...rows.map(
    ([m, k, t, higher]) =>
      `| ${m} | ${fmt(seg[k])} | ${fmt(segReplySpin[k])} | ${fmt(segNoSpin[k])} | ${fmt(sock[k])} | ${ratio(k, higher).toFixed(2)}× | ${t} |`,
  ),
];
for (const l of lines) console.log(l);
const date = new Date().toISOString();
const result = {
  date,
  node: process.version,
  cpus: cpus().length,
  loadavg: { start: load0, end: load1 },
  iters: ITERS,
  warmup: WARMUP,
  gib: GIB,
  depth: DEPTH,
  segment: seg,
  segmentReplySpinOnly: segReplySpin,
  segmentNoSpin: segNoSpin,
  unixSocket: sock,
  ratios: {
    read4k: ratio('read4k_us', false),
    read512k: ratio('read512k_us', false),
    write4m: ratio('write4m_GBps', true),
  },
};
const dir = join(here, '..', 'results');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'xseg.json'), `${JSON.stringify(result, null, 2)}\n`);
const md = [
  '# bench/xseg: the segment vs a unix socket (last run)',
  '',
  `\`node bench/xseg/run.mjs --iters ${ITERS} --warmup ${WARMUP} --gib ${GIB} --depth ${DEPTH}\`, ${date}, ` +
    `node ${process.version}, ${cpus().length} CPUs, load ${load0.map((l) => l.toFixed(2)).join(' ')} at the start, ` +
    `${load1.map((l) => l.toFixed(2)).join(' ')} at the end. "segment" uses the default spins (50 µs for replies due, ` +
    '50 µs linger after serving); the other two columns turn them off (see bench/xseg/README.md).',
  '',
  ...lines,
  '',
];
writeFileSync(join(dir, 'xseg.md'), md.join('\n'));
console.log('\nwrote bench/results/xseg.json and bench/results/xseg.md');
