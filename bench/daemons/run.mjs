#!/usr/bin/env node
/**
 * bench/daemons: the NBD fio table through the daemons next to the embedded endpoint, in one run.
 * A script run by hand, never a test. Run it under the shared lock:
 *
 *   flock /var/tmp/bench.lock node bench/daemons/run.mjs [--size-mib 512] [--runtime 10] [--ramp 2]
 *                                                         [--dir /var/tmp] [--rows seqread,randread]
 *                                                         [--wirings embedded,daemons] [--out file.md]
 *
 * Both columns are `vlmc map` endpoints (the same NBD server code, spawned as vlmc spawns it);
 * they differ only in the wiring: embedded (blockers, mapper and composer in the endpoint
 * process) or daemons (the endpoint composes over mapperd and sends data to blockerb over the
 * segment; with ARCHIPELAGO_COMPOSE=vlmcd in the environment, endpoint → vlmcd instead). The same
 * volume, filled once with random bytes, is mapped one way, then the other (the daemons stay up
 * for the embedded run, idle). Writes `bench/results/daemons.md` (or `--out`).
 *
 * The endpoint through the daemons reads and writes the file store itself (its direct data path,
 * packages/runtime/src/direct-data.ts); `--wirings embedded,daemons,segment` adds a column with
 * `ARCHIPELAGO_DATA_PATH=segment` (every data I/O sent to blockerb over the segment, as before).
 *
 * `--rados` puts both blockers on RADOS (pools blocks and maps, a namespace of the run) of a
 * throwaway single-node cluster started under --dir (scripts/ceph-cluster.sh; purged at the end),
 * or of the cluster of `--ceph-conf <ceph.conf>`. Over RADOS the "daemons" column is the direct
 * data path asked for (`ARCHIPELAGO_DATA_PATH=direct`: the endpoint's own librados client per
 * volume, registered in the volume lock), "segment" the path through blockerb.
 */
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { run } from '../../scripts/lib/proc.mjs';
import { daemonsConfig, useRadosBlockers } from './config.mjs';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '../..');
const TOOL = join(ROOT, 'packages/archipelago/bin/archipelago.js');
const VLMC = join(ROOT, 'packages/cli/bin/vlmc.js');
const MiB = 1 << 20;

const { values: opts } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '512' },
    runtime: { type: 'string', default: '10' },
    ramp: { type: 'string', default: '2' },
    dir: { type: 'string', default: '/var/tmp' },
    rows: { type: 'string' },
    wirings: { type: 'string', default: 'embedded,daemons' },
    keep: { type: 'boolean', default: false },
    out: { type: 'string' },
    repeat: { type: 'string', default: '1' },
    rados: { type: 'boolean', default: false },
    'ceph-conf': { type: 'string' },
  },
});
const sizeMiB = Number(opts['size-mib']);
const ALL_ROWS = [
  { id: 'seqread', label: '1 MiB seq read, QD16', rw: 'read', bs: '1M', iodepth: 16 },
  { id: 'seqwrite', label: '1 MiB seq write, QD16', rw: 'write', bs: '1M', iodepth: 16 },
  { id: 'randread', label: '4 KiB rand read, QD32', rw: 'randread', bs: '4k', iodepth: 32 },
  { id: 'randwrite', label: '4 KiB rand write, QD32', rw: 'randwrite', bs: '4k', iodepth: 32 },
  { id: 'randread-qd1', label: '4 KiB rand read, QD1', rw: 'randread', bs: '4k', iodepth: 1 },
];
const rows = opts.rows ? ALL_ROWS.filter((r) => opts.rows.split(',').includes(r.id)) : ALL_ROWS;

const ENV = { ...process.env, PATH: `/usr/bin:/usr/sbin:${process.env.PATH ?? ''}` };
const { dir, conf } = await daemonsConfig(opts.dir, 'bench-daemons', 1280);
const rados = opts.rados || opts['ceph-conf'] !== undefined;
let clusterDir = null;
let cephConf = opts['ceph-conf'] ?? null;
if (rados) {
  if (cephConf === null) {
    clusterDir = join(dir, 'ceph');
    console.error('# starting a throwaway Ceph cluster...');
    await run('bash', [join(ROOT, 'scripts/ceph-cluster.sh'), 'start', clusterDir], ENV);
    cephConf = join(clusterDir, 'ceph.conf');
  }
  const ns = `benchd${process.pid}`;
  await useRadosBlockers(conf, cephConf, ns);
}

const tool = (...a) => run(process.execPath, [TOOL, '-c', conf, ...a], ENV);
/** The columns: a wiring, and for the daemons which data path the endpoint takes. */
const COLUMNS = {
  embedded: { ARCHIPELAGO_WIRING: 'embedded' },
  daemons: { ARCHIPELAGO_WIRING: 'daemons', ARCHIPELAGO_DATA_PATH: 'direct' },
  segment: { ARCHIPELAGO_WIRING: 'daemons', ARCHIPELAGO_DATA_PATH: 'segment' },
};
const vlmc = (wiring, ...a) =>
  run(process.execPath, [VLMC, '-c', conf, ...a], { ...ENV, ...COLUMNS[wiring] });

async function fio(row, uri, out) {
  await run(
    'fio',
    [
      '--name',
      row.id,
      '--ioengine=nbd',
      `--uri=${uri}`,
      `--rw=${row.rw}`,
      `--bs=${row.bs}`,
      `--iodepth=${row.iodepth}`,
      '--numjobs=1',
      '--time_based=1',
      `--runtime=${opts.runtime}`,
      `--ramp_time=${opts.ramp}`,
      '--norandommap=1',
      '--randrepeat=0',
      '--randseed=12345',
      '--lat_percentiles=1',
      '--output-format=json',
      `--output=${out}`,
    ],
    ENV,
  );
  const job = JSON.parse(await readFile(out, 'utf8')).jobs[0];
  const side = row.rw.includes('write') ? job.write : job.read;
  return {
    iops: side.iops,
    mibps: side.bw_bytes / MiB,
    p50: (side.lat_ns?.percentile?.['50.000000'] ?? 0) / 1000,
  };
}

const columns = opts.wirings.split(',');
const results = Object.fromEntries(columns.map((c) => [c, {}]));
/** Every round's result, in round order: runs[column][row] = [...]. */
const runs = Object.fromEntries(columns.map((c) => [c, {}]));
try {
  await tool('start');
  const src = join(dir, 'source.raw');
  await run('dd', ['if=/dev/urandom', `of=${src}`, 'bs=1M', `count=${sizeMiB}`, 'status=none']);
  await vlmc('daemons', 'import', src, 'bench');
  // mapperd keeps what it imported open (host lock): closed, every column can map it.
  await vlmc('daemons', 'close', 'bench').catch(() => {});
  // --repeat N: the columns in turn, N rounds (the machine's load moves between them); each
  // cell is the median round, by IOPS.
  for (let round = 1; round <= Number(opts.repeat); round++) {
    for (const wiring of columns) {
      await vlmc(wiring, 'map', 'bench');
      const uri = `nbd+unix:///bench?socket=${join(dir, 'run/bench.sock')}`;
      for (const row of rows) {
        const r = await fio(row, uri, join(dir, `${wiring}-${row.id}.json`));
        runs[wiring][row.id] = [...(runs[wiring][row.id] ?? []), r];
        console.log(
          `${String(round).padStart(2)} ${wiring.padEnd(8)} ${row.label.padEnd(24)} ${r.iops.toFixed(0).padStart(8)} IOPS ${r.mibps.toFixed(1).padStart(8)} MiB/s  p50 ${r.p50.toFixed(0)} µs`,
        );
      }
      await vlmc(wiring, 'unmap', 'bench');
    }
  }
  for (const c of columns)
    for (const row of rows) {
      const all = [...runs[c][row.id]].sort((a, b) => a.iops - b.iops);
      results[c][row.id] = all[all.length >> 1];
    }
} finally {
  await tool('stop', '-f').catch((e) => console.error(String(e)));
  if (clusterDir !== null)
    await run('bash', [join(ROOT, 'scripts/ceph-cluster.sh'), 'purge', clusterDir], ENV).catch((e) =>
      console.error(String(e)),
    );
  if (!opts.keep) await rm(dir, { recursive: true, force: true });
}

const others = columns.filter((c) => c !== 'embedded');
const lines = [
  '# NBD through the daemons vs the embedded endpoint',
  '',
  `\`node bench/daemons/run.mjs --size-mib ${sizeMiB} --runtime ${opts.runtime} --ramp ${opts.ramp} --wirings ${columns.join(',')} --repeat ${opts.repeat}\`, ${new Date().toISOString().slice(0, 16)}Z, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), load ${loadavg()
    .map((l) => l.toFixed(2))
    .join(
      ' ',
    )} at the end. ${rados ? `RADOS blockers (pools blocks and maps of ${clusterDir !== null ? 'a throwaway single-node memstore cluster, scripts/ceph-cluster.sh' : cephConf}, the configuration's defaults)` : `File blockers under ${opts.dir} (blockerb \`sync = flush\`, the default; blockerm \`sync = always\`)`}, one volume of ${sizeMiB} MiB (4 MiB blocks) filled with random bytes, fio nbd engine, one connection per job; with --repeat, the columns in turn per round and each cell the median round (ratios of medians; per-round ratios below). Every column is a \`vlmc map\` endpoint; "daemons" is ${process.env.ARCHIPELAGO_COMPOSE === 'vlmcd' ? 'endpoint → vlmcd → mapperd, blockerb' : 'the endpoint composing over mapperd (leased map cache), data read and written by the endpoint itself (direct data path)'}; "segment" is the same with \`ARCHIPELAGO_DATA_PATH=segment\` (data to blockerb over the segment).`,
  '',
  `| row | ${columns.map((c) => `${c} IOPS`).join(' | ')} | ${others.map((c) => `${c} / embedded`).join(' | ')} | ${columns.map((c) => `${c} p50 µs`).join(' | ')} |`,
  `|---|${columns.map(() => '---:').join('|')}|${others.map(() => '---:').join('|')}|${columns.map(() => '---:').join('|')}|`,
];
for (const row of rows) {
  const r = columns.map((c) => results[c][row.id]);
  if (r.some((x) => !x)) continue;
  const e = results.embedded?.[row.id];
  lines.push(
    `| ${row.label} | ${r.map((x) => x.iops.toFixed(0)).join(' | ')} | ${others.map((c) => (e ? (results[c][row.id].iops / e.iops).toFixed(2) : '–')).join(' | ')} | ${r.map((x) => x.p50.toFixed(0)).join(' | ')} |`,
  );
}
if (Number(opts.repeat) > 1) {
  lines.push('', 'Per round, daemons-column ratios to the embedded column of the same round:', '');
  for (const row of rows) {
    const e = runs.embedded?.[row.id];
    if (!e) continue;
    for (const c of others) {
      const per = runs[c][row.id].map((r, i) => (r.iops / (e[i]?.iops ?? Number.NaN)).toFixed(2));
      lines.push(`- ${row.label}, ${c}: ${per.join(', ')}`);
    }
  }
}
const md = `${lines.join('\n')}\n`;
console.log(`\n${md}`);
if (opts.out) await writeFile(opts.out, md);
else if (rados) console.log('(--rados: not written to bench/results; --out to keep it)');
else if (existsSync(join(ROOT, 'bench/results'))) await writeFile(join(ROOT, 'bench/results/daemons.md'), md);
