#!/usr/bin/env node
/**
 * bench/daemons/rados-share.mjs: the memory of many RADOS volumes mapped on one host, one shared
 * endpoint process (each volume with a librados client of its own) against a process per volume
 * (`ARCHIPELAGO_ENDPOINT_MODE=per-volume`, how RADOS volumes were mapped before). A script run by
 * hand, never a test:
 *
 *   flock /var/tmp/bench.lock node bench/daemons/rados-share.mjs [--count 10] [--wirings embedded,direct]
 *                                   [--idle-ms 3000] [--dir /var/tmp] [--ceph-conf ceph.conf]
 *
 * For each wiring (`embedded`: blockers in the endpoint; `direct`: `archipelago start`, the
 * endpoint composing over mapperd with the direct data path, `ARCHIPELAGO_DATA_PATH=direct`) and
 * each mode, in a fresh configuration on RADOS (a throwaway single-node cluster under --dir, or the
 * cluster of --ceph-conf): maps --count thin volumes of 1 GiB with the built `vlmc map` (timed),
 * writes 1 MiB into each through its NBD socket (qemu-io: the direct path's client registers
 * with its first write), lets them sit idle, then sums VmRSS and Pss of the endpoint processes and
 * counts their threads (/proc/PID/task), and unmaps them. The threads a librados client adds are
 * (threads at N volumes − threads at 1 volume) / (N − 1) of the shared process.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { run } from '../../scripts/lib/proc.mjs';
import { daemonsConfig, useRadosBlockers } from './config.mjs';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '../..');
const TOOL = join(ROOT, 'packages/archipelago/bin/archipelago.js');
const VLMC = join(ROOT, 'packages/cli/bin/vlmc.js');
const ENV = { ...process.env, PATH: `/usr/bin:/usr/sbin:${process.env.PATH ?? ''}` };

const { values: opts } = parseArgs({
  options: {
    count: { type: 'string', default: '10' },
    wirings: { type: 'string', default: 'embedded,direct' },
    'idle-ms': { type: 'string', default: '3000' },
    dir: { type: 'string', default: '/var/tmp' },
    'ceph-conf': { type: 'string' },
  },
});
const count = Number(opts.count);
const median = (xs) => [...xs].sort((a, b) => a - b)[(xs.length - 1) >> 1];

let clusterDir = null;
let cephConf = opts['ceph-conf'] ?? null;
const tmp = await mkdtemp(join(opts.dir, 'rados-share-'));
if (cephConf === null) {
  clusterDir = join(tmp, 'ceph');
  console.error('# starting a throwaway Ceph cluster...');
  await run('bash', [join(ROOT, 'scripts/ceph-cluster.sh'), 'start', clusterDir], ENV);
  cephConf = join(clusterDir, 'ceph.conf');
}

/** kB of VmRSS, Pss and the thread count of a process. */
function memOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rss = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  const pss = Number(/Pss:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
  return { rss, pss, threads: readdirSync(`/proc/${pid}/task`).length };
}

async function measure(wiring, mode) {
  const { dir, conf } = await daemonsConfig(tmp, `rs-${wiring}-${mode}`.replace(/[^a-z-]/g, ''), 1280);
  const ns = `rshare${process.pid}${wiring}${mode}`.replace(/[^A-Za-z0-9]/g, '');
  await useRadosBlockers(conf, cephConf, ns);
  const env = {
    ...ENV,
    ARCHIPELAGO_ENDPOINT_MODE: mode,
    ...(wiring === 'direct'
      ? { ARCHIPELAGO_WIRING: 'daemons', ARCHIPELAGO_DATA_PATH: 'direct' }
      : { ARCHIPELAGO_WIRING: 'embedded' }),
  };
  const vlmc = (...a) => run(process.execPath, [VLMC, '-c', conf, ...a], env);
  const out = { wiring, mode, mapMs: [], first: null, all: null };
  try {
    if (wiring === 'direct') await run(process.execPath, [TOOL, '-c', conf, 'start'], ENV);
    for (let i = 0; i < count; i++) await vlmc('create', `v${i}`, '--size', '1G');
    for (let i = 0; i < count; i++) {
      const t0 = performance.now();
      const r = await vlmc('map', `v${i}`, '--json');
      out.mapMs.push(performance.now() - t0);
      const { uri } = JSON.parse(r);
      await run('qemu-io', ['-f', 'raw', '-c', `write -P ${i + 1} 0 1M`, uri], ENV);
      if (i === 0) {
        await new Promise((r) => setTimeout(r, Number(opts['idle-ms'])));
        out.first = memOf(JSON.parse(r).pid);
      }
    }
    await new Promise((r) => setTimeout(r, Number(opts['idle-ms'])));
    const mapped = JSON.parse(await vlmc('showmapped', '--json'));
    const pids = [...new Set(mapped.map((m) => m.pid))];
    const mems = pids.map(memOf);
    out.all = {
      processes: pids.length,
      rss: mems.reduce((a, m) => a + m.rss, 0),
      pss: mems.reduce((a, m) => a + m.pss, 0),
      threads: mems.reduce((a, m) => a + m.threads, 0),
    };
    for (let i = 0; i < count; i++) await vlmc('unmap', `v${i}`);
  } finally {
    if (wiring === 'direct')
      await run(process.execPath, [TOOL, '-c', conf, 'stop', '-f'], ENV).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
  return out;
}

const results = [];
try {
  for (const wiring of opts.wirings.split(','))
    for (const mode of ['shared', 'per-volume']) {
      const r = await measure(wiring, mode);
      results.push(r);
      console.error(JSON.stringify(r));
    }
} finally {
  if (clusterDir !== null)
    await run('bash', [join(ROOT, 'scripts/ceph-cluster.sh'), 'purge', clusterDir], ENV).catch(() => {});
  await rm(tmp, { recursive: true, force: true });
}

const mib = (kb) => (kb / 1024).toFixed(0);
const lines = [
  `\`node bench/daemons/rados-share.mjs --count ${count} --wirings ${opts.wirings}\`, ${new Date().toISOString().slice(0, 16)}Z, ${cpus().length} CPUs, load ${loadavg()
    .map((l) => l.toFixed(2))
    .join(
      ' ',
    )} at the end; RADOS on ${clusterDir !== null ? 'a throwaway single-node memstore cluster' : cephConf}.`,
  '',
  `| wiring | mode | processes | RSS MiB (${count} volumes) | Pss MiB | threads | RSS MiB (1 volume) | threads (1 volume) | threads per added volume | map ms (median, 2nd..) |`,
  '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|',
];
for (const r of results) {
  const perVol = r.mode === 'shared' ? ((r.all.threads - r.first.threads) / (count - 1)).toFixed(1) : '–';
  lines.push(
    `| ${r.wiring} | ${r.mode} | ${r.all.processes} | ${mib(r.all.rss)} | ${mib(r.all.pss)} | ${r.all.threads} | ${mib(r.first.rss)} | ${r.first.threads} | ${perVol} | ${median(r.mapMs.slice(1)).toFixed(0)} |`,
  );
}
console.log(lines.join('\n'));
