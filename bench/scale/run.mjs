#!/usr/bin/env node
/**
 * bench/scale: many mapped volumes on one host. A script run by hand, never a test:
 *
 *   flock /var/tmp/bench.lock node bench/scale/run.mjs [--counts 1,10,100] [--modes shared,per-volume]
 *                                   [--wirings embedded,daemons] [--size-gib 100] [--idle-ms 3000]
 *                                   [--per-volume-max 100] [--dir /var/tmp] [--out file.md]
 *
 * For each wiring, endpoint mode and count N, in a fresh configuration: creates N thin volumes of
 * --size-gib, maps them one after the other with the built `vlmc map` (the product path, timed
 * from spawn to exit), lets them sit idle, then sums the memory of every endpoint process from
 * /proc (VmRSS, and Pss from smaps_rollup: RSS counts the pages per-volume processes share, the
 * Node binary and libraries, once per process), and unmaps them all (timed). Modes: `shared` (one
 * endpoint process per configuration serves all the volumes, the default) and `per-volume`
 * (ARCHIPELAGO_ENDPOINT_MODE=per-volume: one process per volume, as before issue 18). Wirings:
 * `embedded` (the default) and `daemons` (`archipelago start` first: the endpoints compose over
 * mapperd and blockerb; the daemons' own memory is not counted).
 *
 * The map time of "one more volume" is the median over the maps after the first (the first starts
 * the process in shared mode); spread is min..max. `vlmc showmapped` is timed 5 times in the same
 * state: the CLI's own floor (Node start, loading, the run-state read) at that moment's load.
 * Writes `bench/results/scale.md` (or --out), and the numbers as JSON next to it.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { run } from '../../scripts/lib/proc.mjs';
import { daemonsConfig } from '../daemons/config.mjs';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '../..');
const TOOL = join(ROOT, 'packages/archipelago/bin/archipelago.js');
const VLMC = join(ROOT, 'packages/cli/bin/vlmc.js');

const { values: opts } = parseArgs({
  options: {
    counts: { type: 'string', default: '1,10,100' },
    modes: { type: 'string', default: 'shared,per-volume' },
    wirings: { type: 'string', default: 'embedded' },
    'size-gib': { type: 'string', default: '100' },
    'idle-ms': { type: 'string', default: '3000' },
    'per-volume-max': { type: 'string', default: '100' },
    dir: { type: 'string', default: '/var/tmp' },
    out: { type: 'string' },
  },
});
const counts = opts.counts.split(',').map(Number);
const modes = opts.modes.split(',');
const wirings = opts.wirings.split(',');
const ENV = { ...process.env, PATH: `/usr/bin:/usr/sbin:${process.env.PATH ?? ''}` };

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : s[Math.floor((s.length - 1) / 2)];
};
const ms = (x) => (Number.isNaN(x) ? '-' : x.toFixed(0));
const mib = (kb) => (kb / 1024).toFixed(0);

/** kB of VmRSS and Pss of a process (0 when it is gone). */
function memOf(pid) {
  try {
    const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    const pss = Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
    return { rss, pss };
  } catch {
    return { rss: 0, pss: 0 };
  }
}

async function embeddedConfig(base) {
  const dir = await mkdtemp(join(base, 'bench-scale-'));
  const conf = join(dir, 'archipelago.conf');
  await writeFile(
    conf,
    `[ARCHIPELAGO]\nUSER = root\nGROUP = root\n[XSEG]\n[PEERS]\n[blockerb]\ntype = file_blocker\narchip_dir = ${dir}/blocks\n[blockerm]\ntype = file_blocker\narchip_dir = ${dir}/maps\n[mapperd]\n[vlmcd]\n`,
  );
  return { dir, conf };
}

async function timed(fn) {
  const t0 = performance.now();
  const v = await fn();
  return { v, ms: performance.now() - t0 };
}

async function measure(wiring, mode, n) {
  const { dir, conf } =
    wiring === 'daemons'
      ? await daemonsConfig(opts.dir, 'bench-scale', 1280)
      : await embeddedConfig(opts.dir);
  if (wiring === 'daemons') {
    // The peers run as root here, like the endpoints: the temporary directory is root's alone.
    const text = readFileSync(conf, 'utf8');
    if (!text.includes('[ARCHIPELAGO]'))
      await writeFile(conf, `[ARCHIPELAGO]\nUSER = root\nGROUP = root\n${text}`);
  }
  const env = {
    ...ENV,
    ARCHIPELAGO_ENDPOINT_MODE: mode,
    ...(wiring === 'daemons' ? { ARCHIPELAGO_WIRING: 'daemons' } : {}),
  };
  const vlmc = (...a) => run(process.execPath, [VLMC, '-c', conf, ...a], env);
  if (wiring === 'daemons') await run(process.execPath, [TOOL, '-c', conf, 'start'], env);
  const names = Array.from({ length: n }, (_, i) => `v${String(i).padStart(3, '0')}`);
  try {
    for (const v of names) await vlmc('create', v, '--size', `${opts['size-gib']}G`);
    const mapMs = [];
    const pids = new Set();
    for (const v of names) {
      const { v: out, ms: t } = await timed(() => vlmc('map', v, '--json'));
      mapMs.push(t);
      pids.add(JSON.parse(out).pid);
    }
    await new Promise((r) => setTimeout(r, Number(opts['idle-ms'])));
    let rss = 0;
    let pss = 0;
    for (const pid of pids) {
      const m = memOf(pid);
      rss += m.rss;
      pss += m.pss;
    }
    // The CLI's own floor in the same minute: `vlmc showmapped` (start, load, list the run-state).
    const floorMs = [];
    for (let i = 0; i < 5; i++) floorMs.push((await timed(() => vlmc('showmapped'))).ms);
    const unmapMs = [];
    for (const v of names) unmapMs.push((await timed(() => vlmc('unmap', v))).ms);
    const more = mapMs.slice(1);
    return {
      wiring,
      mode,
      n,
      processes: pids.size,
      rssKiB: rss,
      pssKiB: pss,
      firstMapMs: mapMs[0],
      moreMapMedian: median(more),
      moreMapMin: more.length ? Math.min(...more) : Number.NaN,
      moreMapMax: more.length ? Math.max(...more) : Number.NaN,
      unmapMedian: median(unmapMs),
      showmappedMedian: median(floorMs),
    };
  } finally {
    if (wiring === 'daemons')
      await run(process.execPath, [TOOL, '-c', conf, 'stop', '-f'], env).catch(() => '');
    await rm(dir, { recursive: true, force: true });
  }
}

const results = [];
const loadBefore = loadavg()
  .map((x) => x.toFixed(2))
  .join(' ');
for (const wiring of wirings) {
  for (const n of counts) {
    for (const mode of modes) {
      if (mode === 'per-volume' && n > Number(opts['per-volume-max'])) continue;
      const r = await measure(wiring, mode, n);
      r.load = loadavg()[0].toFixed(2);
      results.push(r);
      console.log(
        `${wiring} ${mode} N=${n}: ${r.processes} process(es), RSS ${mib(r.rssKiB)} MiB, PSS ${mib(r.pssKiB)} MiB, first map ${ms(r.firstMapMs)} ms, one more ${ms(r.moreMapMedian)} ms (${ms(r.moreMapMin)}..${ms(r.moreMapMax)}), unmap ${ms(r.unmapMedian)} ms, showmapped ${ms(r.showmappedMedian)} ms, load ${r.load}`,
      );
    }
  }
}

const lines = [
  '# bench/scale: many mapped volumes per host',
  '',
  `Run ${new Date().toISOString()} on ${cpus().length} vCPU, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, load average before: ${loadBefore}.`,
  `Thin volumes of ${opts['size-gib']} GiB (file blockers), mapped one after the other with the built \`vlmc map\`, idle ${opts['idle-ms']} ms, then memory summed over the endpoint processes from /proc.`,
  'Modes: `shared` = one endpoint process per configuration (default); `per-volume` = `ARCHIPELAGO_ENDPOINT_MODE=per-volume` (one process per volume, before issue 18).',
  '',
  '| wiring | mode | volumes | processes | RSS sum MiB | PSS sum MiB | RSS/volume MiB | first map ms | one more map ms median (min..max) | unmap ms median | `vlmc showmapped` ms median | load |',
  '|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|',
  ...results.map(
    (r) =>
      `| ${r.wiring} | ${r.mode} | ${r.n} | ${r.processes} | ${mib(r.rssKiB)} | ${mib(r.pssKiB)} | ${(r.rssKiB / 1024 / r.n).toFixed(1)} | ${ms(r.firstMapMs)} | ${ms(r.moreMapMedian)} (${ms(r.moreMapMin)}..${ms(r.moreMapMax)}) | ${ms(r.unmapMedian)} | ${ms(r.showmappedMedian)} | ${r.load} |`,
  ),
  '',
  'Ratios shared / per-volume (same wiring, same count, same run):',
  '',
  '| wiring | volumes | RSS | PSS | one more map (median) |',
  '|---|---:|---:|---:|---:|',
  ...results
    .filter((r) => r.mode === 'shared')
    .flatMap((r) => {
      const old = results.find((o) => o.mode === 'per-volume' && o.wiring === r.wiring && o.n === r.n);
      if (!old) return [];
      const f = (a, b) => (b ? (a / b).toFixed(2) : '-');
      return [
        `| ${r.wiring} | ${r.n} | ${f(r.rssKiB, old.rssKiB)} | ${f(r.pssKiB, old.pssKiB)} | ${f(r.moreMapMedian, old.moreMapMedian)} |`,
      ];
    }),
  '',
];
const out = opts.out ?? join(ROOT, 'bench/results/scale.md');
await writeFile(`${out.replace(/\.md$/, '')}.json`, `${JSON.stringify(results, null, 2)}\n`);
await writeFile(out, lines.join('\n'));
console.log(`wrote ${out}`);
