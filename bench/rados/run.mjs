#!/usr/bin/env node
/**
 * RADOS bench, not a test: everything on one throwaway single-node cluster (scripts/ceph-cluster.sh,
 * memstore), in one run.
 *
 *   1. fio side by side: our NBD endpoint on RADOS (bench/rados/server.mjs, fio's nbd engine) vs
 *      fio's rbd engine (librbd) on an RBD image of the same size.
 *      Rows: 1 MiB sequential write/read at depth 16, 4 KiB random write/read at depth 32.
 *      Writes run first, so reads find data on both sides (a read of a hole costs us nothing).
 *   2. raw object throughput: our binding (RadosBlocker.writeFull/read of 4 MiB objects, 16 in
 *      flight) vs `rados bench` (-b 4M -t 16), write then seq read.
 *
 *   node bench/rados/run.mjs [--size-mib 1024] [--runtime 10] [--conf CEPH_CONF] [--keep]
 *
 * Prints a table with ratios (ours / peer; > 1 is better for us) and writes bench/results/rados.json.
 * Without --conf it starts a cluster in a temp dir and purges it at the end. Needs `pnpm build`.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs, promisify } from 'node:util';

const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const SCRIPT = join(ROOT, 'scripts', 'ceph-cluster.sh');
const RESULTS = join(ROOT, 'bench', 'results');
const exec = promisify(execFile);

const { values: o } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1024' },
    runtime: { type: 'string', default: '10' },
    conf: { type: 'string' },
    keep: { type: 'boolean', default: false },
  },
});
const sizeMiB = Number(o['size-mib']);
const runtime = Number(o.runtime);
const env = { ...process.env, PATH: `/usr/bin:/bin:${process.env.PATH ?? ''}`, LC_ALL: 'C' };

async function run(cmd, args, extraEnv = {}) {
  try {
    return await exec(cmd, args, { env: { ...env, ...extraEnv }, maxBuffer: 256 * 1024 * 1024 });
  } catch (e) {
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr || e.message}`);
  }
}

const tmp = await mkdtemp(join(tmpdir(), 'archip-rados-bench-'));
let clusterDir = null;
let conf = o.conf;
if (!conf) {
  clusterDir = join(tmp, 'ceph');
  console.error('# starting a throwaway cluster...');
  await run('bash', [SCRIPT, 'start', clusterDir]);
  conf = join(clusterDir, 'ceph.conf');
}
const cephEnv = { CEPH_CONF: conf };

const ROWS = [
  { id: 'seqwrite', rw: 'write', bs: '1M', depth: 16 },
  { id: 'seqread', rw: 'read', bs: '1M', depth: 16 },
  { id: 'randwrite', rw: 'randwrite', bs: '4k', depth: 32 },
  { id: 'randread', rw: 'randread', bs: '4k', depth: 32 },
];

function fioArgs(row, engineArgs, out) {
  // Sequential writes cover the whole image once (so reads later find data); the rest is timed.
  const timed = row.id === 'seqwrite' ? [] : ['--time_based', `--runtime=${runtime}`];
  return [
    `--name=${row.id}`,
    ...engineArgs,
    `--rw=${row.rw}`,
    `--bs=${row.bs}`,
    `--iodepth=${row.depth}`,
    `--size=${sizeMiB}M`,
    '--numjobs=1',
    ...timed,
    '--output-format=json',
    `--output=${out}`,
  ];
}

async function fio(row, engineArgs, tag) {
  const out = join(tmp, `fio-${row.id}-${tag}.json`);
  await run('fio', fioArgs(row, engineArgs, out), cephEnv);
  const j = JSON.parse(await readFile(out, 'utf8'));
  const job = j.jobs[0];
  const side = row.rw.includes('write') ? job.write : job.read;
  return { iops: side.iops, MiBps: side.bw_bytes / 1048576, latUsMean: side.lat_ns.mean / 1000 };
}

const results = { fio: {}, raw: {}, notes: [] };

// --- the RBD image (librbd peer)
let rbdOk = true;
try {
  await run('rbd', ['pool', 'init', 'rbd'], cephEnv);
  await run('rbd', ['rm', 'bench'], cephEnv).catch(() => {});
  await run(
    'rbd',
    ['create', '--size', String(sizeMiB), '--image-feature', 'layering', 'rbd/bench'],
    cephEnv,
  );
} catch (e) {
  rbdOk = false;
  results.notes.push(`rbd image: ${e.message}`);
  console.error(`# rbd image not available: ${e.message}`);
}

// --- our endpoint
const sock = join(tmp, 'nbd.sock');
const server = spawn(
  process.execPath,
  [
    join(ROOT, 'bench', 'rados', 'server.mjs'),
    '--conf',
    conf,
    '--socket',
    sock,
    '--size-mib',
    String(sizeMiB),
  ],
  {
    stdio: ['ignore', 'pipe', 'inherit'],
  },
);
await new Promise((resolve, reject) => {
  server.once('exit', (c) => reject(new Error(`server.mjs exited ${c}`)));
  server.stdout.once('data', resolve);
});
const nbdEngine = ['--ioengine=nbd', `--uri=nbd+unix:///bench?socket=${sock}`];
const rbdEngine = ['--ioengine=rbd', '--clientname=admin', '--pool=rbd', '--rbdname=bench'];

for (const row of ROWS) {
  results.fio[row.id] = { ours: await fio(row, nbdEngine, 'ours') };
  if (rbdOk) {
    try {
      results.fio[row.id].librbd = await fio(row, rbdEngine, 'rbd');
    } catch (e) {
      results.notes.push(`fio rbd ${row.id}: ${e.message}`);
    }
  }
  console.error(`# ${row.id} done`);
}
server.kill('SIGTERM');
await new Promise((r) => server.once('exit', r));

// --- raw object throughput: our binding vs rados bench
const { RadosBlocker } = await import(
  pathToFileURL(join(ROOT, 'packages', 'blocker-rados', 'dist', 'index.js')).href
);
const OBJ = 4 * 1024 * 1024;
const DEPTH = 16;
async function oursRaw() {
  const b = await RadosBlocker.open({ cephConf: conf, pool: 'blocks', namespace: `bench${Date.now()}` });
  const data = Buffer.alloc(OBJ, 0x5a);
  let n = 0;
  let t0 = performance.now();
  let deadline = t0 + runtime * 1000;
  await Promise.all(
    Array.from({ length: DEPTH }, async () => {
      while (performance.now() < deadline) await b.writeFull(`obj_${n++}`, data);
    }),
  );
  const wSec = (performance.now() - t0) / 1000;
  const written = n;
  let r = 0;
  t0 = performance.now();
  deadline = t0 + runtime * 1000;
  await Promise.all(
    Array.from({ length: DEPTH }, async () => {
      while (performance.now() < deadline && r < written) await b.read(`obj_${r++}`, 0, OBJ);
    }),
  );
  const rSec = (performance.now() - t0) / 1000;
  for (let i = 0; i < written; i++) await b.delete(`obj_${i}`);
  await b.close();
  return { write: (written * OBJ) / 1048576 / wSec, read: (r * OBJ) / 1048576 / rSec };
}
async function radosBench() {
  const bw = (s) => Number(/Bandwidth \(MB\/sec\):\s+([\d.]+)/.exec(s)?.[1] ?? Number.NaN);
  const w = await run(
    'rados',
    [
      '-p',
      'blocks',
      'bench',
      String(runtime),
      'write',
      '-b',
      String(OBJ),
      '-t',
      String(DEPTH),
      '--no-cleanup',
    ],
    cephEnv,
  );
  const r = await run(
    'rados',
    ['-p', 'blocks', 'bench', String(runtime), 'seq', '-t', String(DEPTH)],
    cephEnv,
  );
  await run('rados', ['-p', 'blocks', 'cleanup'], cephEnv).catch(() => {});
  // rados bench prints MB/s with MB = 2^20 bytes.
  return { write: bw(w.stdout), read: bw(r.stdout) };
}
const ours = await oursRaw();
const peer = await radosBench();
results.raw = {
  write: { oursMiBps: ours.write, radosBenchMiBps: peer.write },
  read: { oursMiBps: ours.read, radosBenchMiBps: peer.read },
};

// --- report
const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const lines = [];
lines.push('| row | ours IOPS | ours MiB/s | librbd IOPS | librbd MiB/s | ratio |');
lines.push('|---|---:|---:|---:|---:|---:|');
for (const row of ROWS) {
  const r = results.fio[row.id];
  const ratio = r.librbd ? r.ours.iops / r.librbd.iops : Number.NaN;
  r.ratio = ratio;
  lines.push(
    `| ${row.id} ${row.bs} qd${row.depth} | ${fmt(r.ours.iops)} | ${fmt(r.ours.MiBps, 1)} | ${fmt(r.librbd?.iops)} | ${fmt(r.librbd?.MiBps, 1)} | ${fmt(ratio, 2)} |`,
  );
}
lines.push('');
lines.push('| raw 4 MiB objects, 16 in flight | ours MiB/s | rados bench MiB/s | ratio |');
lines.push('|---|---:|---:|---:|');
for (const k of ['write', 'read']) {
  const r = results.raw[k];
  r.ratio = r.oursMiBps / r.radosBenchMiBps;
  lines.push(`| ${k} | ${fmt(r.oursMiBps, 1)} | ${fmt(r.radosBenchMiBps, 1)} | ${fmt(r.ratio, 2)} |`);
}
const host = {
  date: new Date().toISOString(),
  cpu: cpus()[0]?.model,
  cpus: cpus().length,
  memGiB: Math.round(totalmem() / 2 ** 30),
  node: process.version,
  fio: (await run('fio', ['--version'])).stdout.trim(),
  ceph: (await run('ceph', ['--version'])).stdout.trim(),
  cluster: 'single node, 1 mon + 1 osd (memstore), size 1, no mgr',
};
console.log(lines.join('\n'));
if (results.notes.length) console.log(`\nnotes:\n${results.notes.map((n) => `- ${n}`).join('\n')}`);
await mkdir(RESULTS, { recursive: true });
await writeFile(
  join(RESULTS, 'rados.json'),
  `${JSON.stringify({ host, sizeMiB, runtime, ...results }, null, 2)}\n`,
);
console.error('# wrote bench/results/rados.json');

if (clusterDir && !o.keep) await run('bash', [SCRIPT, 'purge', clusterDir]).catch(() => {});
if (!o.keep) await rm(tmp, { recursive: true, force: true });
