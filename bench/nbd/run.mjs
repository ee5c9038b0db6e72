#!/usr/bin/env node
/**
 * NBD throughput and latency of the product path (`vlmc map`, the built CLI), side by side with
 * qemu-nbd and nbdkit in one run, measured by fio's nbd engine (libnbd). Not a test: run it by
 * hand (see README.md).
 *
 *   node bench/nbd/run.mjs [--size-mib 1024] [--runtime 10] [--ramp 2] [--dir /var/tmp]
 *                          [--rows seqread,randread] [--servers map,daemons,inproc,qemu-nbd,nbdkit]
 *                          [--profile DIR] [--direct] [--sync default|always|flush] [--keep]
 *
 * Servers (all on unix sockets, all files in one temp dir on the same disk):
 *   map      `vlmc map` (packages/cli/bin/vlmc.js) of a volume in a file-blocker configuration:
 *            the endpoint process a user runs (embedded wiring, compose local)
 *   daemons  `archipelago start` on a second configuration, then `vlmc map` through the daemons
 *   inproc   node bench/nbd/server.mjs: FileBlocker x2 + Mapper + Composer + NbdServer, in-process
 *   qemu-nbd -f raw --cache=writeback --aio=threads -t, on a raw file
 *   nbdkit   file plugin (default cache), on a raw file
 * Each is filled with the same random bytes first (reads of holes would measure nothing).
 * Rows run in a fixed order, and within a row the servers run in the order given. One fio job,
 * one connection, per measurement.
 *
 * Writes bench/results/nbd.json, bench/results/nbd.svg and bench/results/nbd.md.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { run } from '../../scripts/lib/proc.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = dirname(dirname(HERE));
const RESULTS = join(ROOT, 'bench', 'results');
const MiB = 1024 * 1024;

const { values: opts } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1024' },
    runtime: { type: 'string', default: '10' },
    ramp: { type: 'string', default: '2' },
    dir: { type: 'string', default: '/var/tmp' },
    rows: { type: 'string' },
    servers: { type: 'string', default: 'map,inproc,qemu-nbd,nbdkit' },
    profile: { type: 'string' },
    direct: { type: 'boolean', default: false },
    sync: { type: 'string', default: 'default' },
    'base-root': { type: 'string' },
    'map-env': { type: 'string' },
    'peer-fill': { type: 'string', default: 'nbdcopy' },
    keep: { type: 'boolean', default: false },
    out: { type: 'string', default: 'nbd' },
  },
});
const sizeMiB = Number(opts['size-mib']);
const runtime = Number(opts.runtime);
const ramp = Number(opts.ramp);
if (!(sizeMiB > 0) || sizeMiB % 4 !== 0) throw new Error('--size-mib must be a positive multiple of 4');
if (!(runtime > 0) || !(ramp >= 0)) throw new Error('--runtime must be > 0 and --ramp >= 0');
const size = sizeMiB * MiB;

/** The rows, in the order they run. */
const ALL_ROWS = [
  { id: 'seqread', label: '1 MiB seq read, QD16', rw: 'read', bs: '1M', iodepth: 16 },
  { id: 'seqwrite', label: '1 MiB seq write, QD16', rw: 'write', bs: '1M', iodepth: 16 },
  { id: 'randread', label: '4 KiB rand read, QD32', rw: 'randread', bs: '4k', iodepth: 32 },
  { id: 'randwrite', label: '4 KiB rand write, QD32', rw: 'randwrite', bs: '4k', iodepth: 32 },
  { id: 'randread-qd1', label: '4 KiB rand read, QD1', rw: 'randread', bs: '4k', iodepth: 1, latency: true },
];
const rows = opts.rows ? ALL_ROWS.filter((r) => opts.rows.split(',').includes(r.id)) : ALL_ROWS;
const serverIds = opts.servers.split(',');
const OURS = ['map', 'daemons', 'inproc', 'base'];
const PEERS = ['qemu-nbd', 'nbdkit'];
for (const s of serverIds)
  if (![...OURS, ...PEERS].includes(s)) throw new Error(`--servers: unknown server ${s}`);
if (!serverIds.some((s) => OURS.includes(s))) throw new Error('--servers must include one of ours');
if (!['default', 'always', 'flush'].includes(opts.sync)) throw new Error('--sync: default, always or flush');
if (!['nbdcopy', 'copy'].includes(opts['peer-fill'])) throw new Error('--peer-fill: nbdcopy or copy');
const VLMC = join(ROOT, 'packages', 'cli', 'bin', 'vlmc.js');
const ARCHIPELAGO = join(ROOT, 'packages', 'archipelago', 'bin', 'archipelago.js');
if (serverIds.includes('base') && !opts['base-root']) throw new Error('--servers base needs --base-root');
const VLMC_BASE = opts['base-root'] ? join(opts['base-root'], 'packages', 'cli', 'bin', 'vlmc.js') : null;

const QEMU_ARGS = ['-f', 'raw', '--cache=writeback', '--aio=threads'];

// ------------------------------------------------------------------------------------------------
// processes

const version = (cmd, args) =>
  run(cmd, args)
    .then((s) => s.split('\n')[0].trim())
    .catch(() => 'unknown');

/** Resolves once a unix socket accepts connections. */
async function waitSocket(path, child, what) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what} exited early (code ${child.exitCode})`);
    if (existsSync(path)) {
      const ok = await new Promise((r) => {
        const s = connect(path);
        s.once('connect', () => {
          s.destroy();
          r(true);
        });
        s.once('error', () => r(false));
      });
      if (ok) return;
    }
    if (Date.now() > deadline) throw new Error(`${what}: ${path} not ready after 30 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A long-running server; `stop()` sends SIGTERM and waits for the exit. */
function startDaemon(cmd, args, what) {
  // Our (node) server runs as `vlmc map` runs it, with libuv's io_uring off (see packages/cli
  // src/commands/map.ts); qemu-nbd and nbdkit do not use libuv.
  const env = { ...process.env, UV_USE_IO_URING: process.env.UV_USE_IO_URING ?? '0' };
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  let err = '';
  child.stderr.on('data', (d) => {
    err += d;
  });
  child.on('error', (e) => {
    err += String(e);
  });
  const exited = new Promise((r) => child.once('exit', r));
  return {
    child,
    what,
    stderr: () => err,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    },
  };
}

async function startInproc(dir, socket, sync, profileDir) {
  const node = profileDir
    ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, '--cpu-prof-name=inproc.cpuprofile']
    : [];
  const args = [
    ...node,
    join(HERE, 'server.mjs'),
    '--dir',
    dir,
    '--socket',
    socket,
    '--size-mib',
    String(sizeMiB),
    ...(opts.direct ? ['--direct'] : []),
    '--sync',
    sync,
  ];
  const d = startDaemon(process.execPath, args, 'inproc');
  await new Promise((resolve, reject) => {
    let buf = '';
    d.child.stdout.on('data', (c) => {
      buf += c;
      if (buf.includes('"ready":true')) resolve();
    });
    d.child.once('exit', (code) => reject(new Error(`server.mjs exited (${code}):\n${d.stderr()}`)));
  });
  return d;
}

/**
 * A configuration for `vlmc` (and `archipelago start`) in `dir`: file blockers, run-state in
 * `dir/run`, `sync` only when --sync names one (else the product's default applies).
 */
async function writeConfig(dir, segment, syncMode = opts.sync) {
  await mkdir(dir, { recursive: true });
  const conf = join(dir, 'archipelago.conf');
  const sync = syncMode === 'default' ? [] : [`sync = ${syncMode}`];
  const direct = opts.direct ? ['direct = True'] : [];
  await writeFile(
    conf,
    [
      '[ARCHIPELAGO]',
      'USER = root',
      'GROUP = root',
      `RUN_DIR = ${join(dir, 'run')}`,
      '[XSEG]',
      `segment_name = ${segment}`,
      '[PEERS]',
      '[blockerb]',
      'type = file_blocker',
      `archip_dir = ${join(dir, 'blocks')}`,
      ...sync,
      ...direct,
      '[blockerm]',
      'type = file_blocker',
      `archip_dir = ${join(dir, 'maps')}`,
      '[mapperd]',
      '[vlmcd]',
      '',
    ].join('\n'),
  );
  return conf;
}

/** Runs the built vlmc against `conf`; `extraEnv` reaches the endpoint process too. */
function vlmc(conf, args, extraEnv = {}, bin = VLMC) {
  return run(process.execPath, [bin, ...args], { ...process.env, ARCHIPELAGO_CONF: conf, ...extraEnv }).then(
    (s) => s.trim(),
  );
}

/** The blockerb sync mode the product resolves for `conf` (its default when --sync default). */
async function effectiveSync(conf) {
  const rt = await import(pathToFileURL(join(ROOT, 'packages', 'runtime', 'dist', 'index.js')).href);
  return rt.blockerOptions(rt.loadConfig(conf), 'blockerb').sync ?? 'always';
}

/**
 * Under --profile: the endpoint `vlmc map` starts (packages/runtime/dist/endpoint/main.js, the same
 * request and environment: UV_THREADPOOL_SIZE=16, UV_USE_IO_URING=0), started here under
 * `node --cpu-prof` (Node refuses --cpu-prof in NODE_OPTIONS). Stopped with SIGTERM (it unmaps).
 */
async function startEndpointProfiled(conf, name, socket, what, profileDir, extraEnv, bin) {
  const root = dirname(dirname(dirname(dirname(bin))));
  const main = join(root, 'packages', 'runtime', 'dist', 'endpoint', 'main.js');
  const rt = await import(pathToFileURL(join(root, 'packages', 'runtime', 'dist', 'index.js')).href);
  const loaded = rt.loadConfig(conf);
  const req = {
    config: loaded.path,
    volume: name,
    readonly: false,
    socket,
    runDir: join(dirname(conf), 'run', 'mapped'),
  };
  await mkdir(req.runDir, { recursive: true });
  const env = {
    ARCHIPELAGO_ENDPOINT: JSON.stringify(req),
    UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16',
    UV_USE_IO_URING: process.env.UV_USE_IO_URING ?? '0',
    ...extraEnv,
  };
  const child = spawn(
    process.execPath,
    ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=${what}.cpuprofile`, main],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } },
  );
  await new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (c) => {
      buf += c;
      if (buf.includes('READY')) resolve();
      if (buf.includes('ERROR')) reject(new Error(`endpoint: ${buf}`));
    });
    child.once('exit', (code) => reject(new Error(`endpoint exited (${code}): ${buf}`)));
  });
  const exited = new Promise((r) => child.once('exit', r));
  return {
    what,
    uri: `nbd+unix:///${name}?socket=${socket}`,
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** `vlmc map NAME --socket SOCK`; `stop()` unmaps. Under --profile the endpoint runs with --cpu-prof. */
async function startMap(conf, name, socket, what, profileDir) {
  const env = {};
  // --map-env K=V,K=V: environment for the `map` column's endpoint only (A/B against `base`).
  if (what === 'map' && opts['map-env'])
    for (const kv of opts['map-env'].split(',')) {
      const [k, ...v] = kv.split('=');
      env[k] = v.join('=');
    }
  const bin = what === 'base' ? VLMC_BASE : VLMC;
  if (profileDir) return startEndpointProfiled(conf, name, socket, what, profileDir, env, bin);
  const uri = await vlmc(conf, ['map', name, '--socket', socket], env, bin);
  return {
    what,
    uri,
    async stop() {
      await vlmc(conf, ['unmap', name], {}, bin);
    },
  };
}

// ------------------------------------------------------------------------------------------------
// fio

function fioArgs(row, uri, outFile) {
  return [
    '--name',
    row.id,
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${row.rw}`,
    `--bs=${row.bs}`,
    `--iodepth=${row.iodepth}`,
    '--numjobs=1',
    '--time_based=1',
    `--runtime=${runtime}`,
    `--ramp_time=${ramp}`,
    '--norandommap=1',
    '--randrepeat=0',
    '--randseed=12345',
    '--lat_percentiles=1',
    '--percentile_list=50:99:99.9',
    '--output-format=json',
    `--output=${outFile}`,
  ];
}

async function fio(row, uri, outFile) {
  await run('fio', fioArgs(row, uri, outFile));
  const j = JSON.parse(await readFile(outFile, 'utf8'));
  const job = j.jobs[0];
  const side = row.rw.includes('write') ? job.write : job.read;
  const lat = side.lat_ns ?? {};
  const pct = lat.percentile ?? {};
  const us = (ns) => (typeof ns === 'number' ? ns / 1000 : null);
  return {
    iops: side.iops,
    mibps: side.bw_bytes / MiB,
    ios: side.total_ios,
    errors: job.error,
    latUs: {
      mean: us(lat.mean),
      p50: us(pct['50.000000']),
      p99: us(pct['99.000000']),
      p999: us(pct['99.900000']),
    },
  };
}

/**
 * The pid of the process listening on the unix socket `path` (`ss -xlpn`), or null. The server's
 * CPU time (all its threads: thread pool included) is read from /proc/<pid>/stat around each cell.
 */
async function pidOfSocket(path) {
  const out = await run('ss', ['-xlpnH']).catch(() => '');
  for (const line of out.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[4] !== path) continue;
    const m = /pid=(\d+)/.exec(line);
    if (m) return Number(m[1]);
  }
  return null;
}

/**
 * utime + stime of a process in µs: `all` threads (thread pool included) and its `main` (event
 * loop) thread; null when it cannot be read.
 */
async function cpuUs(pid) {
  if (pid == null) return null;
  const ticks = async (file) => {
    const stat = await readFile(file, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields 14 and 15 (utime, stime) are at 11 and 12 after the command; clock ticks of 10 ms
    return (Number(f[11]) + Number(f[12])) * 10_000;
  };
  try {
    return { all: await ticks(`/proc/${pid}/stat`), main: await ticks(`/proc/${pid}/task/${pid}/stat`) };
  } catch {
    return null;
  }
}

// ------------------------------------------------------------------------------------------------
// output

const f0 = (n) => (n == null ? '-' : Math.round(n).toLocaleString('en-US'));
const f1 = (n) => (n == null ? '-' : n.toFixed(1));
const f2 = (n) => (n == null || !Number.isFinite(n) ? '-' : `${n.toFixed(2)}x`);

function tables(result) {
  const ours = result.servers.filter((s) => OURS.includes(s));
  const peers = result.servers.filter((s) => PEERS.includes(s));
  const pairs = ours.flatMap((o) => peers.map((p) => [o, p]));
  const head = [
    'row',
    ...result.servers.flatMap((s) => [`${s} IOPS`, `${s} MiB/s`]),
    ...pairs.map(([o, p]) => `${o}/${p}`),
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`];
  for (const r of result.rows) {
    const cells = [r.label];
    for (const s of result.servers) cells.push(f0(r.results[s]?.iops), f1(r.results[s]?.mibps));
    for (const [o, p] of pairs) cells.push(f2(r.results[o]?.iops / r.results[p]?.iops));
    lines.push(`| ${cells.join(' | ')} |`);
  }
  // Server CPU per request (utime + stime of the server process, all threads, over the cell
  // including its ramp, divided by the requests fio counted over runtime + ramp at its rate):
  // less noisy than IOPS on a shared machine, since it does not depend on who else runs.
  const hc = ['server CPU µs per request: all threads (event-loop thread)', ...result.servers];
  const cpu = [`| ${hc.join(' | ')} |`, `|${hc.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`];
  for (const r of result.rows)
    cpu.push(
      `| ${r.label} | ${result.servers.map((s) => `${f0(r.results[s]?.cpuUsPerOp)} (${f0(r.results[s]?.mainCpuUsPerOp)})`).join(' | ')} |`,
    );
  const lat = result.rows.filter((r) => r.latency);
  const out = [lines.join('\n'), cpu.join('\n')];
  if (lat.length) {
    const h2 = ['latency (µs), 4 KiB rand read QD1', 'mean', 'p50', 'p99', 'p99.9'];
    const l2 = [`| ${h2.join(' | ')} |`, `|---|---:|---:|---:|---:|`];
    for (const r of lat)
      for (const s of result.servers) {
        const l = r.results[s]?.latUs ?? {};
        l2.push(`| ${s} | ${f1(l.mean)} | ${f1(l.p50)} | ${f1(l.p99)} | ${f1(l.p999)} |`);
      }
    out.push(l2.join('\n'));
  }
  return out.join('\n\n');
}

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Grouped bars: per row, each server's IOPS relative to qemu-nbd (1.0 = qemu-nbd), log2 axis. */
function svg(result) {
  const servers = result.servers;
  const colors = {
    map: '#d9480f',
    daemons: '#f08c00',
    inproc: '#e599f7',
    'qemu-nbd': '#1c7ed6',
    nbdkit: '#2f9e44',
  };
  const W = 900;
  const H = 420;
  const m = { l: 60, r: 20, t: 50, b: 80 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const ratioOf = (r, s) => {
    const base = r.results['qemu-nbd']?.iops ?? r.results[servers[0]].iops;
    return (r.results[s]?.iops ?? 0) / base;
  };
  let lo = 0.125;
  let hi = 4;
  for (const r of result.rows)
    for (const s of servers) {
      const v = ratioOf(r, s);
      if (v > 0) {
        lo = Math.min(lo, 2 ** Math.floor(Math.log2(v)));
        hi = Math.max(hi, 2 ** Math.ceil(Math.log2(v)));
      }
    }
  const y = (v) =>
    m.t + ph - ((Math.log2(Math.max(v, lo)) - Math.log2(lo)) / (Math.log2(hi) - Math.log2(lo))) * ph;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">NBD via fio: IOPS relative to qemu-nbd (log scale; labels are IOPS)</text>`,
    `<text x="${W / 2}" y="36" text-anchor="middle" fill="#555">${esc(`${result.sizeMiB} MiB, ${result.runtimeS} s per job, ${result.host.date}; qemu-nbd ${QEMU_ARGS.join(' ')}`)}</text>`,
  ];
  for (let v = lo; v <= hi; v *= 2) {
    const yy = y(v).toFixed(1);
    out.push(
      `<line x1="${m.l}" x2="${W - m.r}" y1="${yy}" y2="${yy}" stroke="${v === 1 ? '#333' : '#ddd'}" ${v === 1 ? 'stroke-dasharray="4 3"' : ''}/>`,
      `<text x="${m.l - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle">${v >= 1 ? v : `1/${1 / v}`}x</text>`,
    );
  }
  const gw = pw / result.rows.length;
  const bw = Math.min(40, (gw * 0.8) / servers.length);
  result.rows.forEach((r, i) => {
    const gx = m.l + i * gw + (gw - bw * servers.length) / 2;
    servers.forEach((s, j) => {
      const v = ratioOf(r, s);
      const x = gx + j * bw;
      const top = y(v);
      const base = y(lo);
      out.push(
        `<rect x="${x.toFixed(1)}" y="${top.toFixed(1)}" width="${(bw - 3).toFixed(1)}" height="${Math.max(0, base - top).toFixed(1)}" fill="${colors[s] ?? '#888'}"><title>${esc(`${s}: ${f0(r.results[s]?.iops)} IOPS, ${f1(r.results[s]?.mibps)} MiB/s`)}</title></rect>`,
        `<text x="${(x + (bw - 3) / 2).toFixed(1)}" y="${(top - 4).toFixed(1)}" text-anchor="middle" font-size="9">${esc(compact(r.results[s]?.iops))}</text>`,
      );
    });
    out.push(
      `<text x="${(m.l + i * gw + gw / 2).toFixed(1)}" y="${H - m.b + 18}" text-anchor="middle">${esc(r.label)}</text>`,
    );
  });
  servers.forEach((s, j) => {
    const x = m.l + j * 150;
    out.push(
      `<rect x="${x}" y="${H - 30}" width="12" height="12" fill="${colors[s] ?? '#888'}"/>`,
      `<text x="${x + 18}" y="${H - 20}">${esc(s)}</text>`,
    );
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

function compact(n) {
  if (n == null) return '-';
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(n >= 1e4 ? 0 : 1)}k`;
  return String(Math.round(n));
}

// ------------------------------------------------------------------------------------------------
// main

async function main() {
  for (const [cmd, hint] of [
    ['fio', 'fio'],
    ['qemu-nbd', 'qemu-utils'],
    ['nbdkit', 'nbdkit'],
    ['nbdcopy', 'libnbd-bin'],
  ]) {
    await run('sh', ['-c', `command -v ${cmd}`]).catch(() => {
      throw new Error(`${cmd} not found (Debian package ${hint})`);
    });
  }
  if (!existsSync(join(ROOT, 'packages', 'nbd', 'dist', 'index.js')))
    throw new Error('packages are not built: run `pnpm build` at the repository root');

  const host = {
    date: new Date().toISOString(),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cpus: os.cpus().length,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    kernel: os.release(),
    loadavgStart: os.loadavg().map((x) => Number(x.toFixed(2))),
    fs: (await run('df', ['-T', opts.dir]).catch(() => '')).split('\n')[1]?.split(/\s+/)[1] ?? 'unknown',
    fio: await version('fio', ['--version']),
    qemuNbd: await version('qemu-nbd', ['--version']),
    nbdkit: await version('nbdkit', ['--version']),
  };

  await mkdir(opts.dir, { recursive: true });
  const tmp = await mkdtemp(join(opts.dir, 'archip-nbd-bench-'));
  host.uptimeStart = (await run('uptime', []).catch(() => '')).trim();
  const daemons = [];
  const cleanup = async () => {
    for (const d of daemons.splice(0).reverse()) await d.stop().catch(() => {});
    if (!opts.keep) await rm(tmp, { recursive: true, force: true });
    else console.error(`kept ${tmp}`);
  };
  process.on('SIGINT', () => {
    cleanup().finally(() => process.exit(130));
  });
  try {
    // 1. the data: random bytes, the same for everyone
    console.error(`# generating ${sizeMiB} MiB of random data in ${tmp}`);
    const src = join(tmp, 'source.raw');
    const fd = openSync(src, 'w');
    for (let off = 0; off < size; off += 4 * MiB) writeSync(fd, randomBytes(4 * MiB));
    fsyncSync(fd);
    closeSync(fd);

    const sock = (s) => join(tmp, `${s}.sock`);
    const uris = {
      map: `nbd+unix:///bench?socket=${sock('map')}`,
      daemons: `nbd+unix:///bench?socket=${sock('daemons')}`,
      base: `nbd+unix:///bench?socket=${sock('base')}`,
      inproc: `nbd+unix:///bench?socket=${sock('inproc')}`,
      'qemu-nbd': `nbd+unix:///bench?socket=${sock('qemu-nbd')}`,
      nbdkit: `nbd+unix:///?socket=${sock('nbdkit')}`,
    };

    // 2. fill our volumes through our own endpoints (nbdcopy), then restart them so a profile
    //    covers only the measured jobs
    const confs = {};
    const fillS = {};
    let sync = null;
    const mapped = (s) => s === 'map' || s === 'daemons' || s === 'base';
    // `base` (another checkout's vlmc, for before/after) gets the sync mode ours resolves to.
    for (const s of [
      ...serverIds.filter(mapped).filter((s) => s !== 'base'),
      ...serverIds.filter((s) => s === 'base'),
    ]) {
      confs[s] = await writeConfig(
        join(tmp, s),
        `archip-bench-${process.pid}-${s}`,
        s === 'base' ? (sync ?? opts.sync) : opts.sync,
      );
      sync ??= await effectiveSync(confs[s]);
      if (s === 'daemons') {
        await run(process.execPath, [ARCHIPELAGO, 'start'], { ...process.env, ARCHIPELAGO_CONF: confs[s] });
        daemons.push({
          what: 'archipelago',
          stop: () =>
            run(process.execPath, [ARCHIPELAGO, 'stop'], { ...process.env, ARCHIPELAGO_CONF: confs[s] }),
        });
      }
      await vlmc(confs[s], ['create', 'bench', '--size', `${sizeMiB}M`], {}, s === 'base' ? VLMC_BASE : VLMC);
      console.error(`# filling ${s} (nbdcopy through vlmc map)`);
      const m = await startMap(confs[s], 'bench', sock(s), s, null);
      const t0 = performance.now();
      await run('nbdcopy', [src, m.uri]);
      fillS[s] = (performance.now() - t0) / 1000;
      await m.stop();
    }
    sync ??= opts.sync === 'default' ? 'always' : opts.sync;
    if (serverIds.includes('inproc')) {
      console.error('# filling inproc (nbdcopy through server.mjs)');
      const filler = await startInproc(join(tmp, 'inproc'), sock('inproc'), sync, null);
      const t0 = performance.now();
      await run('nbdcopy', [src, uris.inproc]);
      fillS.inproc = (performance.now() - t0) / 1000;
      await filler.stop();
    }

    // 3. the peers' raw files, filled the way ours are (`--peer-fill nbdcopy`, the default): an
    //    empty sparse file of the export's size, served, and written by nbdcopy through the peer
    //    itself, so every store's page cache holds folios made by the same writes (a file written
    //    in large requests gets large folios, and a 4 KiB write into a large folio costs ext4 2-3x
    //    the CPU: bench/results/nbd-writes.md). `--peer-fill copy`: `cp` of the bytes, as before.
    const files = { 'qemu-nbd': join(tmp, 'qemu.raw'), nbdkit: join(tmp, 'nbdkit.raw') };
    const startPeer = async (s) => {
      const d =
        s === 'qemu-nbd'
          ? startDaemon('qemu-nbd', [...QEMU_ARGS, '-t', '-x', 'bench', '-k', sock(s), files[s]], s)
          : startDaemon('nbdkit', ['-f', '-U', sock(s), 'file', `file=${files.nbdkit}`], s);
      daemons.push(d);
      await waitSocket(sock(s), d.child, s);
    };
    const peersUp = new Set();
    for (const s of serverIds.filter((s) => PEERS.includes(s))) {
      if (opts['peer-fill'] === 'copy') {
        await copyFile(src, files[s]);
        continue;
      }
      await writeFile(files[s], '');
      await truncate(files[s], size);
      await startPeer(s);
      peersUp.add(s);
      console.error(`# filling ${s} (nbdcopy through ${s})`);
      const t0 = performance.now();
      await run('nbdcopy', [src, uris[s]]);
      fillS[s] = (performance.now() - t0) / 1000;
    }
    await run('sync', []);
    await rm(src);

    // 4. the servers
    if (opts.profile) await mkdir(opts.profile, { recursive: true });
    for (const s of serverIds) {
      if (mapped(s)) daemons.push(await startMap(confs[s], 'bench', sock(s), s, opts.profile ?? null));
      else if (s === 'inproc')
        daemons.push(await startInproc(join(tmp, 'inproc'), sock('inproc'), sync, opts.profile ?? null));
      else if (!peersUp.has(s)) await startPeer(s);
    }

    // 5. the jobs, in a fixed order
    const mode = `${sync === 'flush' ? 'write-back: synced at FLUSH/FUA' : 'fdatasync before every ack'} (sync = ${sync}${opts.sync === 'default' ? ', the default' : ''})${opts.direct ? ', O_DIRECT' : ''}`;
    const peerFill =
      opts['peer-fill'] === 'copy'
        ? 'raw file copied with cp'
        : 'raw file filled by nbdcopy through the server, as ours';
    const result = {
      bench: 'nbd',
      host,
      sizeMiB,
      runtimeS: runtime,
      rampS: ramp,
      dir: opts.dir,
      servers: serverIds,
      config: {
        sync,
        syncOption: opts.sync,
        direct: opts.direct,
        blocker: 'file_blocker x2 (maps, blocks)',
        blocksize: '4 MiB',
        peerFill: opts['peer-fill'],
      },
      peers: {
        map: `\`vlmc map\` (built CLI): endpoint process, embedded wiring, compose local; file_blocker, ${mode}, 4 MiB blocks${opts['map-env'] ? `; endpoint environment ${opts['map-env']}` : ''}`,
        daemons: `\`archipelago start\` + \`vlmc map\`: endpoint composes, blockerb/blockerm/mapperd over the XSEG segment; file_blocker, ${mode}`,
        base: `\`vlmc map\` of ${opts['base-root']} (the code before, for before/after), same configuration`,
        inproc: `node bench/nbd/server.mjs: FileBlocker x2 (${mode}) + Mapper + Composer + NbdServer in one process (no lock lease, no control channel)`,
        'qemu-nbd': `qemu-nbd ${QEMU_ARGS.join(' ')} (page cache, no fsync per write); ${peerFill}`,
        nbdkit: `nbdkit file plugin, default cache (page cache, no fsync per write); ${peerFill}`,
      },
      fillS,
      rows: [],
    };
    const pids = {};
    for (const row of rows) {
      const entry = {
        id: row.id,
        label: row.label,
        rw: row.rw,
        bs: row.bs,
        iodepth: row.iodepth,
        latency: !!row.latency,
        results: {},
        ratio: {},
      };
      for (const s of serverIds) {
        console.error(`# ${row.label}: ${s}`);
        // No cell pays for the previous one's dirty pages: write them back first.
        await run('sync', []);
        pids[s] ??= await pidOfSocket(sock(s));
        const c0 = await cpuUs(pids[s]);
        entry.results[s] = await fio(row, uris[s], join(tmp, `fio-${row.id}-${s}.json`));
        const c1 = await cpuUs(pids[s]);
        const n = entry.results[s].iops * (runtime + ramp);
        if (c0 && c1 && n > 0) {
          entry.results[s].cpuUsPerOp = (c1.all - c0.all) / n;
          entry.results[s].mainCpuUsPerOp = (c1.main - c0.main) / n;
        }
      }
      for (const o of serverIds.filter((s) => OURS.includes(s)))
        for (const p of serverIds.filter((s) => PEERS.includes(s)))
          entry.ratio[`${o}/${p}`] = entry.results[o].iops / entry.results[p].iops;
      result.rows.push(entry);
    }
    for (const d of daemons.splice(0).reverse()) await d.stop();
    host.loadavgEnd = os.loadavg().map((x) => Number(x.toFixed(2)));
    host.uptimeEnd = (await run('uptime', []).catch(() => '')).trim();
    if (opts.profile) {
      const profs = (await readdir(opts.profile)).filter((f) => f.endsWith('.cpuprofile'));
      result.profile = profs.map((f) => join(opts.profile, f));
    }

    // 6. output
    const table = tables(result);
    console.log(`\n${table}\n`);
    console.log(`uptime: ${host.uptimeStart} -> ${host.uptimeEnd}`);
    for (const [s, d] of Object.entries(result.peers)) if (serverIds.includes(s)) console.log(`- ${s}: ${d}`);
    await mkdir(RESULTS, { recursive: true });
    await writeFile(join(RESULTS, `${opts.out}.json`), `${JSON.stringify(result, null, 2)}\n`);
    await writeFile(join(RESULTS, `${opts.out}.svg`), svg(result));
    const md = [
      '# NBD bench (bench/nbd/run.mjs)',
      '',
      `${host.date} · ${host.cpu} × ${host.cpus} · ${host.memGiB} GiB · ${host.fs} in ${opts.dir} · node ${host.node} · ${host.fio} · ${host.qemuNbd} · ${host.nbdkit}`,
      '',
      `\`uptime\` at start: ${host.uptimeStart}; at end: ${host.uptimeEnd}. Other work on the machine shows up as noise (see bench/nbd/README.md, caveats).`,
      '',
      `Configuration: blockerb sync = **${sync}**${opts.sync === 'default' ? ' (the default)' : ''}; ${result.config.blocker}; ${result.config.blocksize} blocks${opts.direct ? '; O_DIRECT' : ''}.`,
      '',
      `${sizeMiB} MiB per export, filled with random data; ${runtime} s per job after ${ramp} s ramp; one fio job (nbd engine, one connection) per cell. Ratios are IOPS ours/peer (> 1 is better for us).`,
      '',
      ...serverIds.map((s) => `- **${s}**: ${result.peers[s]}`),
      '',
      table,
      '',
    ].join('\n');
    await writeFile(join(RESULTS, `${opts.out}.md`), md);
    console.error(`# wrote bench/results/${opts.out}.{json,svg,md}`);
  } finally {
    await cleanup();
  }
}

await main();
