#!/usr/bin/env node
/**
 * RADOS bench, not a test: everything on one throwaway single-node cluster (scripts/ceph-cluster.sh,
 * memstore, cephx), in one run.
 *
 *   1. fio side by side, the same rows on each side:
 *      - map:       the product path: `vlmc map` (the built CLI, embedded wiring) of a volume of a
 *                   configuration whose blockers are rados_blocker (pools "maps" and "blocks" of
 *                   the same cluster, a namespace of the run), in the product's default
 *                   configuration; fio's nbd engine, one connection per job;
 *      - ours:      our NBD endpoint on RADOS in this bench's own process (bench/rados/server.mjs),
 *                   fio's nbd engine; a write is acknowledged when RADOS committed it (an extra
 *                   column: what the library does without the CLI's endpoint);
 *      - ours-wb:   the same endpoint with the blockers' write-back mode (`--sync flush`): a write
 *                   is acknowledged once sent (at most 24 MiB in flight), FLUSH waits for them;
 *      - librbd:    fio's rbd engine on an RBD image of the same size (librbd inside fio: no NBD
 *                   hop) with librbd's cache off, so a write is acknowledged on commit, as ours;
 *      - librbd-wa: the same with librbd's defaults: rbd_cache on, policy writearound, which
 *                   acknowledges a write once sent (at most rbd_cache_max_dirty = 24 MiB in
 *                   flight) — the counterpart of ours-wb, not of ours;
 *      - qemu-nbd:  qemu-nbd serving the same RBD image (librbd behind the same NBD hop as ours),
 *                   --cache=none (qemu turns librbd's cache off: acknowledged on commit, as ours).
 *      Rows (as bench/nbd): 1 MiB sequential write/read at depth 16, 4 KiB random write/read at
 *      depth 32, 4 KiB random read at depth 1. The main ratio is map / librbd (issue 18: >= 1.0).
 *      Writes run first, so reads find data on every side (a read of a hole costs us nothing).
 *   2. raw object throughput: our binding (RadosBlocker.writeFull, then readInto a warm buffer per
 *      lane, of 4 MiB objects, 16 in flight) vs `rados bench` (-b 4M -t 16), write then seq read.
 *
 *   node bench/rados/run.mjs [--size-mib 512] [--runtime 10] [--repeat 3] [--conf CEPH_CONF]
 *                            [--out rados] [--keep] [--no-raw]
 *                            [--sides map,librbd,librbd-wa,ours[,ours-wb,qemu-nbd]]
 *                            [--map-sync default|always|flush]
 *
 * --map-sync writes `sync = ...` in the map side's [blockerb] (default: none, the product's
 * default, write-back `flush` for rados_blocker, so its like-for-like peer is librbd-wa; the
 * issue's main ratio is against librbd with its cache off).
 *
 * --repeat N runs the whole matrix N times (rows interleaved side by side in each pass, the sides
 * taking turns to go first) and reports
 * the median IOPS per cell, plus every pass's ratios. CPU is accounted per cell: fio's job (its own
 * usr+sys), the serving process (our node server, qemu-nbd) and the OSD, as CPU µs per I/O, so the
 * table shows where the time goes, not only how fast it went. Take the bench lock:
 *
 *   flock /var/tmp/bench.lock node bench/rados/run.mjs --repeat 3
 *
 * Prints a table with ratios (ours / peer; > 1 is better for us) and writes
 * bench/results/<out>.json; the tables go into bench/results/<out>.md as a new dated section
 * (inserted before the file's first "## " section, newest first). Without --conf it starts a cluster in a temp dir and purges
 * it at the end. Needs `pnpm build`.
 */
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs, promisify } from 'node:util';

const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const SCRIPT = join(ROOT, 'scripts', 'ceph-cluster.sh');
const RESULTS = join(ROOT, 'bench', 'results');
const exec = promisify(execFile);

const { values: o } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '512' },
    runtime: { type: 'string', default: '10' },
    repeat: { type: 'string', default: '1' },
    conf: { type: 'string' },
    out: { type: 'string', default: 'rados' },
    sides: { type: 'string', default: 'map,librbd,librbd-wa,ours' },
    'map-sync': { type: 'string', default: 'default' },
    'no-raw': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
  },
});
const sizeMiB = Number(o['size-mib']);
const runtime = Number(o.runtime);
const repeat = Number(o.repeat);
if (!(sizeMiB > 0 && runtime > 0 && Number.isInteger(repeat) && repeat > 0)) {
  throw new Error('run.mjs: --size-mib, --runtime and --repeat must be positive numbers');
}
const SIDES = o.sides.split(',');
for (const s of SIDES) {
  if (!['map', 'ours', 'ours-wb', 'librbd', 'librbd-wa', 'qemu-nbd'].includes(s))
    throw new Error(`run.mjs: unknown side ${s}`);
}
const env = { ...process.env, PATH: `/usr/bin:/bin:${process.env.PATH ?? ''}`, LC_ALL: 'C' };
const TICK = 100; // USER_HZ on Linux

async function run(cmd, args, extraEnv = {}, timeout = 0) {
  try {
    return await exec(cmd, args, { env: { ...env, ...extraEnv }, maxBuffer: 256 * 1024 * 1024, timeout });
  } catch (e) {
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr || e.message}`);
  }
}

/** CPU seconds (user + system, all threads) a live process has used so far; 0 when gone. */
function cpuSeconds(pid) {
  if (!pid) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / TICK; // utime, stime (fields 14, 15)
  } catch {
    return 0;
  }
}

const loadStart = loadavg();
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
/** The OSD's pid when the cluster is one of scripts/ceph-cluster.sh (its pidfile next to ceph.conf). */
const osdPid = (() => {
  try {
    return Number(readFileSync(join(dirname(conf), 'osd.0.pid'), 'utf8'));
  } catch {
    return 0;
  }
})();

const ROWS = [
  { id: 'seqwrite', label: '1 MiB seq write, QD16', rw: 'write', bs: '1M', depth: 16 },
  { id: 'seqread', label: '1 MiB seq read, QD16', rw: 'read', bs: '1M', depth: 16 },
  { id: 'randwrite', label: '4 KiB rand write, QD32', rw: 'randwrite', bs: '4k', depth: 32 },
  { id: 'randread', label: '4 KiB rand read, QD32', rw: 'randread', bs: '4k', depth: 32 },
  { id: 'randread1', label: '4 KiB rand read, QD1', rw: 'randread', bs: '4k', depth: 1 },
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

/** "1m2.345s" (bash `times`) in seconds. */
function parseTimes(t) {
  const m = /^(\d+)m([\d.]+)s$/.exec(t ?? '');
  return m ? Number(m[1]) * 60 + Number(m[2]) : Number.NaN;
}

/** One fio job; CPU of fio's job, of the serving process and of the OSD, per I/O. */
async function fio(row, engine, tag, serverPid) {
  const out = join(tmp, `fio-${row.id}-${tag}.json`);
  const s0 = cpuSeconds(serverPid);
  const d0 = cpuSeconds(osdPid);
  // bash's `times` prints the CPU of its waited-for children: fio and its job process, with every
  // thread of it (librbd's too), which fio's own usr_cpu/sys_cpu (the job thread only) would miss.
  const { stdout } = await run(
    'bash',
    ['-c', 'fio "$@" >&2 && times', 'fio', ...fioArgs(row, engine.args, out)],
    { ...cephEnv, ...engine.env },
  );
  const [cu, cs] = stdout.trim().split('\n').at(-1).split(/\s+/).map(parseTimes);
  const fioCpu = cu + cs;
  const serverCpu = cpuSeconds(serverPid) - s0;
  const osdCpu = cpuSeconds(osdPid) - d0;
  const j = JSON.parse(await readFile(out, 'utf8'));
  const job = j.jobs[0];
  const side = row.rw.includes('write') ? job.write : job.read;
  const ios = side.total_ios;
  const us = (sec) => (ios > 0 ? (sec * 1e6) / ios : Number.NaN);
  return {
    iops: side.iops,
    MiBps: side.bw_bytes / 1048576,
    latUsMean: side.lat_ns.mean / 1000,
    cpuUsPerIo: { fio: us(fioCpu), server: us(serverCpu), osd: us(osdCpu) },
  };
}

const results = { fio: {}, raw: {}, notes: [] };

// --- the RBD image (librbd peers)
let rbdOk = SIDES.some((s) => s === 'librbd' || s === 'librbd-wa' || s === 'qemu-nbd');
if (rbdOk) {
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
}

/** Spawns a server and waits until `ready(line)` on its stdout (or its socket exists). */
async function startServer(cmd, args, whenReady) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...env, ...cephEnv } });
  let err = '';
  child.stderr.on('data', (d) => {
    err += d;
  });
  await new Promise((resolve, reject) => {
    const onExit = (c) => reject(new Error(`${cmd} exited ${c}: ${err}`));
    child.once('exit', onExit);
    whenReady(child).then(() => {
      child.off('exit', onExit);
      resolve();
    }, reject);
  });
  return child;
}
async function stopServer(child) {
  if (!child || child.exitCode !== null) return;
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
}

const servers = {};
const engines = {};
/** Pids of processes we did not spawn here (the `vlmc map` endpoint), for the CPU columns. */
const serverPids = {};
const VLMC = join(ROOT, 'packages', 'cli', 'bin', 'vlmc.js');
const vlmcConf = join(tmp, 'archipelago.conf');
const vlmc = (...args) =>
  run(process.execPath, [VLMC, ...args], { ARCHIPELAGO_CONF: vlmcConf, ARCHIPELAGO_WIRING: 'embedded' }).then(
    (r) => r.stdout.trim(),
  );
let mapped = false;
let mapSync = '?';
if (SIDES.includes('map')) {
  // The product path: a configuration as an operator writes it (the product's defaults for
  // everything but the blockers' type and pools), `vlmc create`, `vlmc map`.
  const ns = `benchmap${Date.now()}`;
  // rados_blocker sections for pools maps and blocks, in a namespace of this run.
  const rados = (pool) => `type = rados_blocker\npool = ${pool}\nnamespace = ${ns}\nceph_conf = ${conf}\n`;
  const sync = o['map-sync'] === 'default' ? '' : `sync = ${o['map-sync']}\n`;
  await writeFile(
    vlmcConf,
    `[ARCHIPELAGO]\nUSER = root\nGROUP = root\nRUN_DIR = ${join(tmp, 'run')}\n` +
      `[blockerb]\n${rados('blocks')}${sync}[blockerm]\n${rados('maps')}`,
  );
  const sock = join(tmp, 'map.sock');
  try {
    await vlmc('create', 'bench', '--size', `${sizeMiB}M`);
    const uri = await vlmc('map', 'bench', '--socket', sock);
    mapped = true;
    const rt = await import(pathToFileURL(join(ROOT, 'packages', 'runtime', 'dist', 'index.js')).href);
    mapSync = rt.blockerOptions(rt.loadConfig(vlmcConf), 'blockerb').sync ?? 'always';
    const all = JSON.parse(await vlmc('showmapped', '--json'));
    serverPids.map = all.find((e) => e.volume === 'bench')?.pid ?? 0;
    engines.map = { args: ['--ioengine=nbd', `--uri=${uri}`], env: {} };
  } catch (e) {
    results.notes.push(`map: ${e.message}`);
    console.error(`# map not available: ${e.message}`);
  }
}
// Our two endpoints serve two volumes (each holds its volume's lock).
for (const [side, sync, name] of [
  ['ours', 'always', 'bench'],
  ['ours-wb', 'flush', 'benchwb'],
]) {
  if (!SIDES.includes(side)) continue;
  const sock = join(tmp, `${side}.sock`);
  try {
    servers[side] = await startServer(
      process.execPath,
      [
        join(ROOT, 'bench', 'rados', 'server.mjs'),
        '--conf',
        conf,
        '--socket',
        sock,
        '--name',
        name,
        '--sync',
        sync,
        '--size-mib',
        String(sizeMiB),
      ],
      (c) => new Promise((r) => c.stdout.once('data', r)),
    );
    engines[side] = { args: ['--ioengine=nbd', `--uri=nbd+unix:///${name}?socket=${sock}`], env: {} };
  } catch (e) {
    results.notes.push(`${side}: ${e.message}`);
    console.error(`# ${side} not available: ${e.message}`);
  }
}
const librbdArgs = ['--ioengine=rbd', '--clientname=admin', '--pool=rbd', '--rbdname=bench'];
if (rbdOk && SIDES.includes('librbd')) {
  // librbd's cache off (what qemu does for cache=none): a write completes when the OSD committed it.
  const noCache = join(tmp, 'librbd-nocache.conf');
  await writeFile(noCache, `${readFileSync(conf, 'utf8')}\n[client]\nrbd_cache = false\n`);
  engines.librbd = { args: librbdArgs, env: { CEPH_CONF: noCache } };
}
if (rbdOk && SIDES.includes('librbd-wa')) {
  // librbd's defaults: rbd_cache = true, rbd_cache_policy = writearound.
  engines['librbd-wa'] = { args: librbdArgs, env: {} };
}
if (rbdOk && SIDES.includes('qemu-nbd')) {
  const sock = join(tmp, 'qemu.sock');
  try {
    servers['qemu-nbd'] = await startServer(
      'qemu-nbd',
      [
        '--persistent',
        '--shared=4',
        '--format=raw',
        '--cache=none',
        '--export-name=bench',
        `--socket=${sock}`,
        `rbd:rbd/bench:conf=${conf}`,
      ],
      async () => {
        for (let i = 0; i < 200; i++) {
          if (
            await run('test', ['-S', sock]).then(
              () => true,
              () => false,
            )
          )
            return;
          await new Promise((r) => setTimeout(r, 50));
        }
        throw new Error('qemu-nbd did not create its socket');
      },
    );
    engines['qemu-nbd'] = { args: ['--ioengine=nbd', `--uri=nbd+unix:///bench?socket=${sock}`], env: {} };
  } catch (e) {
    results.notes.push(`qemu-nbd on rbd: ${e.message}`);
    console.error(`# qemu-nbd on rbd not available: ${e.message}`);
  }
}
const sides = SIDES.filter((s) => engines[s]);

const median = (xs) => {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};

const passes = [];
for (let pass = 0; pass < repeat; pass++) {
  const p = {};
  // The sides take turns going first (pass k starts at side k), so no side always runs right
  // after the previous row, on an OSD that may still be settling from it.
  const order = sides.map((_, i) => sides[(i + pass) % sides.length]);
  for (const row of ROWS) {
    p[row.id] = {};
    for (const s of order) {
      try {
        p[row.id][s] = await fio(row, engines[s], s, servers[s]?.pid ?? serverPids[s]);
      } catch (e) {
        results.notes.push(`fio ${s} ${row.id} (pass ${pass + 1}): ${e.message}`);
      }
    }
    console.error(
      `# pass ${pass + 1}/${repeat} ${row.id}: ${sides.map((s) => `${s} ${Math.round(p[row.id][s]?.iops ?? Number.NaN)}`).join(', ')} IOPS`,
    );
  }
  passes.push(p);
}
for (const s of Object.keys(servers)) await stopServer(servers[s]);
if (mapped) await vlmc('unmap', 'bench').catch((e) => results.notes.push(`unmap: ${e.message}`));

/** Ratios reported: each of ours against the peer with the same write semantics, and qemu-nbd. */
const RATIOS = [
  ['mapLibrbd', 'map', 'librbd', 'map/librbd'],
  ['mapLibrbdWa', 'map', 'librbd-wa', 'map/librbd-wa'],
  ['oursLibrbd', 'ours', 'librbd', 'ours/librbd'],
  ['oursWbLibrbdWa', 'ours-wb', 'librbd-wa', 'ours-wb/librbd-wa'],
  ['oursQemuNbd', 'ours', 'qemu-nbd', 'ours/qemu-nbd'],
].filter(([, a, b]) => sides.includes(a) && sides.includes(b));
for (const row of ROWS) {
  const cell = {};
  for (const s of sides) {
    const runs = passes.map((p) => p[row.id][s]).filter(Boolean);
    const pick = (f) => median(runs.map(f));
    cell[s] = {
      iops: pick((r) => r.iops),
      MiBps: pick((r) => r.MiBps),
      latUsMean: pick((r) => r.latUsMean),
      cpuUsPerIo: {
        fio: pick((r) => r.cpuUsPerIo.fio),
        server: pick((r) => r.cpuUsPerIo.server),
        osd: pick((r) => r.cpuUsPerIo.osd),
      },
      runs: runs.map((r) => Math.round(r.iops)),
    };
  }
  for (const [key, a, b] of RATIOS) {
    cell[key] = cell[a] && cell[b] ? cell[a].iops / cell[b].iops : Number.NaN;
    cell[`${key}PerPass`] = passes.map((p) =>
      p[row.id][a] && p[row.id][b] ? p[row.id][a].iops / p[row.id][b].iops : Number.NaN,
    );
  }
  results.fio[row.id] = cell;
}

// --- raw object throughput: our binding vs rados bench
const OBJ = 4 * 1024 * 1024;
const DEPTH = 16;
async function oursRaw(RadosBlocker) {
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
      // One warm buffer per lane (readInto), as a streaming reader such as the gateway reads.
      const buf = Buffer.allocUnsafe(OBJ);
      while (performance.now() < deadline && r < written) await b.readInto(`obj_${r++}`, 0, buf);
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
    (4 * runtime + 60) * 1000,
  );
  const r = await run(
    'rados',
    ['-p', 'blocks', 'bench', String(runtime), 'seq', '-t', String(DEPTH)],
    cephEnv,
    (4 * runtime + 60) * 1000,
  );
  await run('rados', ['-p', 'blocks', 'cleanup'], cephEnv).catch(() => {});
  // rados bench prints MB/s with MB = 2^20 bytes.
  return { write: bw(w.stdout), read: bw(r.stdout) };
}
if (!o['no-raw']) {
  const { RadosBlocker } = await import(
    pathToFileURL(join(ROOT, 'packages', 'blocker-rados', 'dist', 'index.js')).href
  );
  const ours = [];
  const peer = [];
  // A full OSD (memstore) holds every write and this phase would hang with the fio results
  // unwritten: each side gets a deadline, and a pass that misses it ends the phase with a note.
  const deadline = (p, what) =>
    Promise.race([
      p,
      new Promise((_, reject) =>
        setTimeout(
          () => reject(new Error(`${what}: no answer in ${4 * runtime + 60} s (OSD full?)`)),
          (4 * runtime + 60) * 1000,
        ).unref(),
      ),
    ]);
  try {
    for (let pass = 0; pass < repeat; pass++) {
      const a = await deadline(oursRaw(RadosBlocker), 'raw writes through our binding');
      const b = await deadline(radosBench(), 'rados bench');
      ours.push(a);
      peer.push(b);
      console.error(`# pass ${pass + 1}/${repeat} raw done`);
    }
  } catch (e) {
    results.notes.push(`raw phase stopped after ${ours.length} pass(es): ${e.message}`);
    console.error(`# ${e.message}`);
  }
  for (const k of ['write', 'read']) {
    const a = median(ours.map((x) => x[k]));
    const b = median(peer.map((x) => x[k]));
    results.raw[k] = {
      oursMiBps: a,
      radosBenchMiBps: b,
      ratio: a / b,
      runs: ours.map((x, i) => [Math.round(x[k]), Math.round(peer[i][k])]),
    };
  }
}

// --- report
const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const lines = [];
const cols = sides.map((s) => `${s} IOPS | ${s} MiB/s`).join(' | ');
const bar = (cells) => `| ${cells.join(' | ')} |`;
lines.push(bar(['row', cols, ...RATIOS.map((r) => r[3])]));
lines.push(bar(['---', ...sides.map(() => '---: | ---:'), ...RATIOS.map(() => '---:')]));
for (const row of ROWS) {
  const c = results.fio[row.id];
  const cells = sides.map((s) => `${fmt(c[s]?.iops)} | ${fmt(c[s]?.MiBps, 1)}`);
  lines.push(bar([row.label, ...cells, ...RATIOS.map((r) => fmt(c[r[0]], 2))]));
}
lines.push('');
lines.push(
  `| CPU µs per I/O (median) | ${sides.map((s) => `${s}: fio + server = client / osd`).join(' | ')} |`,
);
lines.push(`|---|${sides.map(() => '---:').join('|')}|`);
for (const row of ROWS) {
  const c = results.fio[row.id];
  const cells = sides.map((s) => {
    const u = c[s]?.cpuUsPerIo;
    if (!u) return 'n/a';
    const server = s.startsWith('librbd') ? 0 : u.server;
    return `${fmt(u.fio)} + ${fmt(server)} = **${fmt(u.fio + server)}** / ${fmt(u.osd)}`;
  });
  lines.push(`| ${row.label} | ${cells.join(' | ')} |`);
}
if (repeat > 1) {
  for (const [key, , , label] of RATIOS.slice(0, 2)) {
    lines.push('');
    lines.push(`| ${label} per pass | ${passes.map((_, i) => `pass ${i + 1}`).join(' | ')} |`);
    lines.push(`|---|${passes.map(() => '---:').join('|')}|`);
    for (const row of ROWS) {
      lines.push(
        `| ${row.label} | ${results.fio[row.id][`${key}PerPass`].map((r) => fmt(r, 2)).join(' | ')} |`,
      );
    }
  }
}
if (!o['no-raw']) {
  lines.push('');
  lines.push('| raw 4 MiB objects, 16 in flight | ours MiB/s | rados bench MiB/s | ratio |');
  lines.push('|---|---:|---:|---:|');
  for (const k of ['write', 'read']) {
    const r = results.raw[k];
    if (!r) continue;
    lines.push(`| ${k} | ${fmt(r.oursMiBps, 1)} | ${fmt(r.radosBenchMiBps, 1)} | ${fmt(r.ratio, 2)} |`);
  }
}
const SIDE_DOC = {
  map: `\`vlmc map\` (built CLI, embedded wiring) of a volume on rados_blocker (pools maps/blocks, blockerb sync = ${mapSync}${o['map-sync'] === 'default' ? ", the product's default" : ''}), fio nbd engine, one connection`,
  ours: 'bench/rados/server.mjs (RadosBlocker x2 + Mapper + Composer + NbdServer in one process, sync always), fio nbd engine',
  'ours-wb': 'the same server with --sync flush (write-back, at most 24 MiB uncommitted)',
  librbd: "fio's rbd engine, rbd_cache = false (a write completes on commit)",
  'librbd-wa': "fio's rbd engine with librbd's defaults (rbd_cache on, writearound)",
  'qemu-nbd': 'qemu-nbd --cache=none on the same RBD image, fio nbd engine',
};
const host = {
  date: new Date().toISOString(),
  cpu: cpus()[0]?.model,
  cpus: cpus().length,
  memGiB: Math.round(totalmem() / 2 ** 30),
  node: process.version,
  fio: (await run('fio', ['--version'])).stdout.trim(),
  ceph: (await run('ceph', ['--version'])).stdout.trim(),
  cluster: `single node, 1 mon + 1 osd (memstore), size 1, no mgr, auth ${/^auth_client_required\s*=\s*(\S+)/m.exec(readFileSync(conf, 'utf8'))?.[1] ?? '?'}`,
  loadavgStart: loadStart.map((x) => Number(x.toFixed(2))),
  loadavgEnd: loadavg().map((x) => Number(x.toFixed(2))),
};
console.log(lines.join('\n'));
if (results.notes.length) console.log(`\nnotes:\n${results.notes.map((n) => `- ${n}`).join('\n')}`);
await mkdir(RESULTS, { recursive: true });
await writeFile(
  join(RESULTS, `${o.out}.json`),
  `${JSON.stringify({ host, sizeMiB, runtime, repeat, sides, ...results }, null, 2)}\n`,
);
const section = [
  `## ${host.date.slice(0, 16).replace('T', ' ')} UTC: \`node bench/rados/run.mjs ${process.argv.slice(2).join(' ')}\``,
  '',
  ...sides.map((s) => `- **${s}**: ${SIDE_DOC[s]}`),
  '',
  `${host.date} · ${host.cpu} × ${host.cpus} · ${host.memGiB} GiB · node ${host.node} · ${host.fio} · ${host.ceph.replace(/ \(.*/, '')} · ${host.cluster}`,
  '',
  `${sizeMiB} MiB image, ${runtime} s per timed job, median of ${repeat} pass(es); load average at start ${host.loadavgStart.join(' / ')}, at end ${host.loadavgEnd.join(' / ')}.`,
  '',
  ...lines,
  ...(results.notes.length ? ['', 'notes:', ...results.notes.map((n) => `- ${n}`)] : []),
  '',
];
// A new dated section before the first "## " (newest first); a new file gets a title.
const mdFile = join(RESULTS, `${o.out}.md`);
const old = await readFile(mdFile, 'utf8').catch(() => '# RADOS bench (bench/rados/run.mjs)\n\n');
const at = old.search(/^## /m);
await writeFile(
  mdFile,
  at < 0
    ? `${old.trimEnd()}\n\n${section.join('\n')}`
    : `${old.slice(0, at)}${section.join('\n')}\n${old.slice(at)}`,
);
console.error(`# wrote bench/results/${o.out}.json and ${o.out}.md`);

if (clusterDir && !o.keep) await run('bash', [SCRIPT, 'purge', clusterDir]).catch(() => {});
if (!o.keep) await rm(tmp, { recursive: true, force: true });
