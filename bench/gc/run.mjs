#!/usr/bin/env node
/**
 * gc over N objects (default 100,000) with 10% garbage, on the file blocker and on RADOS.
 *
 *   node bench/gc/run.mjs [--objects 100000] [--garbage 0.1] [--runs 2] [--blockers file,rados]
 *                         [--dir /var/tmp] [--ceph-dir /var/tmp/archipelago-bench-ceph] [--keep]
 *
 * Population (4 KiB blocks, so 100,000 objects are 390 MiB), built through the library (Mapper +
 * Composer: the CLI makes 4 MiB blocks only), every block random bytes:
 *   vA: 30% of N blocks written; snapshot sA; 15% of N rewritten in vA (copy-ups);
 *   cB: a clone of sA; 15% of N written in cB; snapshot sB; 10% of N rewritten in cB;
 *   vC: 20% of N written.
 * The live maps (vA, sA, cB, sB, vC) name 90% of N objects. Before each gc run the garbage is
 * made the way users leak it (issue 17's first paragraph): vG: 10% of N written, snapshot sG, then
 * `vlmc remove vG` and `vlmc remove sG` (the trash: ttl 0, purged by the gc run first).
 * gc runs with grace 0 (`--grace 0`): the garbage is younger than the default 10 minutes.
 *
 * Each blocker gets `--runs` pairs of gc runs, alternating:
 *   - `vlmc gc --json --grace 0` (the product path; wall-clock including the node process, and the
 *     command's own `seconds`);
 *   - the library (`gcStore` of @archipelago/runtime, as vlmc calls it) with `onProgress`
 *     timestamps, for the phase split: list (blockerb listed), mark (rounds over blockerm's maps),
 *     judge (an `info` of every candidate: size and mtime), sweep (the deletes).
 * and one `vlmc gc --dry-run --json` (the mark and judge without deletes, as `vlmc du` does).
 * Floors, in the same run: listing blockerb with `find -printf %s %T@` (file: readdir + stat of
 * every object) or `rados ls` (RADOS: the listing only).
 *
 * Imports the built packages (packages/<pkg>/dist): run `pnpm build` first. RADOS: starts (or
 * reuses) a throwaway cluster with scripts/ceph-cluster.sh in --ceph-dir; the objects go to a
 * namespace of their own in pools "maps" and "blocks" and are removed at the end.
 * Writes bench/results/gc.json.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { gitHead, hostInfo, log, median, run, sh, uptime } from './common.mjs';

const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const BIN = join(ROOT, 'packages', 'cli', 'bin', 'vlmc.js');
const RESULTS = join(ROOT, 'bench', 'results', 'gc.json');
const load = (pkg) => import(pathToFileURL(join(ROOT, 'packages', pkg, 'dist', 'index.js')).href);

const { values: o } = parseArgs({
  options: {
    objects: { type: 'string', default: '100000' },
    garbage: { type: 'string', default: '0.1' },
    runs: { type: 'string', default: '2' },
    blockers: { type: 'string', default: 'file,rados' },
    dir: { type: 'string', default: '/var/tmp' },
    'ceph-dir': { type: 'string', default: '/var/tmp/archipelago-bench-ceph' },
    keep: { type: 'boolean', default: false },
  },
});
const N = Number(o.objects);
const G = Math.round(N * Number(o.garbage));
const RUNS = Number(o.runs);
const BS = 4096;
const CHUNK = 256 * BS; // 1 MiB per composer write

const [{ FileBlocker }, { Mapper }, { Composer }, runtime] = await Promise.all([
  load('blocker-file'),
  load('mapper'),
  load('composer'),
  load('runtime'),
]);

/**
 * Writes `blocks` blocks of random bytes at block `first` of `vol`, 1 MiB per write, one at a time
 * (8 at once was slower on the file blocker; see bench/results/gc.md).
 */
async function fill(composer, vol, first, blocks) {
  const pending = new Set();
  for (let b = 0; b < blocks; b += CHUNK / BS) {
    const n = Math.min(CHUNK / BS, blocks - b);
    const p = composer.write(vol, (first + b) * BS, randomBytes(n * BS)).finally(() => pending.delete(p));
    pending.add(p);
    if (pending.size >= 1) await Promise.race(pending);
    // The write-back file blocker fsyncs every dirty directory at once on flush: with tens of
    // thousands of them it runs out of file descriptors (EMFILE), so flush every 8 MiB.
    if ((b / (CHUNK / BS)) % 8 === 7) {
      await Promise.all(pending);
      await composer.flush(vol);
    }
  }
  await Promise.all(pending);
  await composer.flush(vol);
}

const pct = (f) => Math.round(N * f);

async function populateLive(mapper, composer) {
  const a = pct(0.3);
  await mapper.create('vA', { size: a * BS, blocksize: BS });
  await fill(composer, 'vA', 0, a);
  await composer.snapshot('vA', 'sA');
  await fill(composer, 'vA', 0, pct(0.15));
  await mapper.clone('sA', 'cB');
  await fill(composer, 'cB', pct(0.15), pct(0.15));
  await composer.snapshot('cB', 'sB');
  await fill(composer, 'cB', 0, pct(0.1));
  const c = N - G - a - pct(0.15) - pct(0.15) - pct(0.1);
  await mapper.create('vC', { size: c * BS, blocksize: BS });
  await fill(composer, 'vC', 0, c);
  for (const v of ['vA', 'sA', 'cB', 'sB', 'vC']) await composer.close(v).catch(() => {});
}

/**
 * G objects of a volume and its snapshot, both removed (to the trash). The volume writes nothing
 * after the snapshot: the objects a removed volume has of its own (copy-ups) are deleted when its
 * trash entry is purged (at the start of the gc run), not by the sweep; a snapshot's are left to gc.
 */
async function populateGarbage(mapper, composer, k) {
  const v = `vG${k}`;
  const s = `sG${k}`;
  await mapper.create(v, { size: G * BS, blocksize: BS });
  await fill(composer, v, 0, G);
  await composer.snapshot(v, s);
  await composer.close(v).catch(() => {});
  await composer.close(s).catch(() => {});
}

async function openStack(kind, cfg) {
  if (kind === 'file') {
    // Write-back (flushed at the end): with an fdatasync per 4 KiB object, 90,000 objects took
    // about 250 objects/s on this loaded machine. gc itself runs with vlmc's configuration.
    const blockerm = new FileBlocker({ dir: cfg.maps, identity: 'bench_gc', sync: 'flush' });
    const blockerb = new FileBlocker({ dir: cfg.blocks, identity: 'bench_gc', sync: 'flush' });
    return { blockerm, blockerb };
  }
  const { RadosBlocker } = await load('blocker-rados');
  const common = { cephConf: cfg.cephConf, namespace: cfg.namespace, identity: 'bench_gc', sync: 'always' };
  const blockerm = await RadosBlocker.open({ ...common, pool: 'maps' });
  const blockerb = await RadosBlocker.open({ ...common, pool: 'blocks' });
  return { blockerm, blockerb };
}

/** With a fresh stack (closed again after): the population is written as a user's writes would be. */
async function withStack(kind, cfg, fn) {
  const { blockerm, blockerb } = await openStack(kind, cfg);
  const mapper = new Mapper({ blockerm, blockerb });
  const composer = new Composer({ mapper, blockerb });
  try {
    const r = await fn(mapper, composer);
    await blockerb.flush();
    await blockerm.flush();
    return r;
  } finally {
    await mapper.close();
    await Promise.all([blockerm.close(), blockerb.close()]);
  }
}

/** The library path with the phase split (onProgress timestamps). */
async function libraryGc(conf) {
  const session = new runtime.Session({ config: conf });
  const marks = {};
  const t0 = performance.now();
  let last = null;
  const onProgress = (p) => {
    const t = performance.now() - t0;
    if (p.phase === 'list' && p.done === 0) marks.listStart = t;
    if (p.phase === 'list' && p.done > 0) marks.listEnd = t;
    if (p.phase === 'mark') marks.markEnd = t;
    if (p.phase === 'sweep' && marks.sweepStart === undefined) marks.sweepStart = t;
    if (p.phase === 'sweep') marks.sweepEnd = t;
    last = p;
  };
  try {
    const r = await runtime.gcStore(session, { graceMs: 0, onProgress });
    const end = performance.now() - t0;
    const sweepStart = marks.sweepStart ?? end;
    const phases = {
      prepare: marks.listStart, // lock, state record, trash purge
      list: marks.listEnd - marks.listStart,
      mark: marks.markEnd - marks.listEnd,
      judge: sweepStart - marks.markEnd,
      sweep: (marks.sweepEnd ?? sweepStart) - sweepStart,
      total: end,
    };
    for (const k of Object.keys(phases)) phases[k] = Math.round(phases[k]) / 1000;
    return { report: r, phases, lastProgress: last };
  } finally {
    await session.close();
  }
}

function check(r, what) {
  const ok = r.freedObjects === G && r.referencedObjects === N - G && r.blockerObjects === N;
  if (!ok)
    log(
      `!! ${what}: freed ${r.freedObjects} (want ${G}), referenced ${r.referencedObjects} (want ${N - G}), ` +
        `blocker ${r.blockerObjects} (want ${N})`,
    );
  return ok;
}

async function benchBlocker(kind, work, cluster) {
  const conf = join(work, `${kind}.conf`);
  const cfg = {};
  let floor;
  if (kind === 'file') {
    cfg.maps = join(work, 'maps');
    cfg.blocks = join(work, 'blocks');
    await writeFile(
      conf,
      `[blockerb]\ntype = file_blocker\narchip_dir = ${cfg.blocks}\nunique_str = bench_gc\n\n` +
        `[blockerm]\ntype = file_blocker\narchip_dir = ${cfg.maps}\nunique_str = bench_gc\n`,
    );
    floor = {
      what: 'find blocks -type f -printf "%s %T@" (readdir + stat of every object)',
      run: () => run('sh', ['-c', `find ${cfg.blocks} -type f -printf '%s %T@\\n' | wc -l`]),
    };
  } else {
    cfg.cephConf = cluster;
    cfg.namespace = `bench-gc-${process.pid}`;
    const sec = (pool) =>
      `type = rados_blocker\npool = ${pool}\nnamespace = ${cfg.namespace}\nceph_conf = ${cluster}\nunique_str = bench_gc\n`;
    await writeFile(conf, `[blockerb]\n${sec('blocks')}\n[blockerm]\n${sec('maps')}`);
    floor = {
      what: 'rados -p blocks -N NS ls (the listing only)',
      run: () => run('sh', ['-c', `rados -c ${cluster} -p blocks -N ${cfg.namespace} ls | wc -l`]),
    };
  }
  const env = { ...process.env, ARCHIPELAGO_CONF: conf };
  const vlmc = async (...args) => {
    const r = await run(process.execPath, [BIN, ...args, '--json'], env);
    return { json: JSON.parse(r.out), seconds: r.seconds };
  };
  const result = { blocker: kind, uptime: [await uptime()], runs: [] };

  log(`${kind}: populating ${N - G} live objects`);
  const t = performance.now();
  await withStack(kind, cfg, (m, c) => populateLive(m, c));
  result.populateLiveSeconds = (performance.now() - t) / 1000;
  log(`${kind}: live population in ${result.populateLiveSeconds.toFixed(1)} s`);

  let k = 0;
  const garbage = async () => {
    k++;
    const t1 = performance.now();
    await withStack(kind, cfg, (m, c) => populateGarbage(m, c, k));
    await vlmc('remove', `vG${k}`);
    await vlmc('remove', `sG${k}`);
    return (performance.now() - t1) / 1000;
  };

  // A dry run first: the mark and the judging without deletes (what `vlmc du` pays).
  await garbage();
  const fl = await floor.run();
  result.floor = { what: floor.what, seconds: fl.seconds, objects: Number(fl.out.trim()) };
  const dry = await vlmc('gc', '--dry-run', '--grace', '0');
  result.dryRun = {
    wall: dry.seconds,
    seconds: dry.json.seconds,
    reclaimable: dry.json.reclaimableObjects,
    blockerObjects: dry.json.blockerObjects,
  };
  log(
    `${kind}: floor ${fl.seconds.toFixed(2)} s (${fl.out.trim()} objects), dry run ${dry.json.seconds.toFixed(2)} s`,
  );

  let pending = true; // garbage made and not collected yet
  for (let i = 0; i < RUNS; i++) {
    for (const side of ['vlmc', 'library']) {
      const made = pending ? 0 : await garbage();
      pending = false;
      const up = await uptime();
      let row;
      if (side === 'vlmc') {
        const r = await vlmc('gc', '--grace', '0');
        row = { side, pass: i + 1, wall: r.seconds, seconds: r.json.seconds, report: r.json };
      } else {
        const r = await libraryGc(conf);
        row = { side, pass: i + 1, seconds: r.report.seconds, phases: r.phases, report: r.report };
      }
      row.ok = check(row.report, `${kind} ${side} pass ${i + 1}`);
      row.uptime = up;
      row.garbageSeconds = made;
      result.runs.push(row);
      log(
        `${kind} ${side} pass ${i + 1}: ${row.seconds.toFixed(2)} s, freed ${row.report.freedObjects}` +
          (row.phases ? ` phases ${JSON.stringify(row.phases)}` : ` (wall ${row.wall.toFixed(2)} s)`),
      );
    }
  }
  const du = await vlmc('du');
  result.duAfter = du.json;
  result.uptime.push(await uptime());

  if (kind === 'rados' && !o.keep) {
    for (const pool of ['blocks', 'maps']) {
      await run('sh', [
        '-c',
        `rados -c ${cluster} -p ${pool} -N ${cfg.namespace} ls | rados -c ${cluster} -p ${pool} -N ${cfg.namespace} rm - 2>/dev/null || ` +
          `rados -c ${cluster} -p ${pool} -N ${cfg.namespace} ls | xargs -r -n 256 rados -c ${cluster} -p ${pool} -N ${cfg.namespace} rm`,
      ]).catch((e) => log(`cleanup ${pool}: ${e.message}`));
    }
  }
  return result;
}

async function main() {
  const blockers = o.blockers.split(',');
  const work = await mkdtemp(join(o.dir, 'archipelago-bench-gc-'));
  let cluster = null;
  if (blockers.includes('rados')) {
    await run(join(ROOT, 'scripts', 'ceph-cluster.sh'), ['start', o['ceph-dir']]);
    cluster = join(o['ceph-dir'], 'ceph.conf');
  }
  const versions = {
    node: process.version,
    ceph: cluster ? (await sh('ceph', ['-v'])).stdout.trim() : null,
    head: await gitHead(ROOT),
  };
  const out = {
    date: new Date().toISOString(),
    host: hostInfo(),
    versions,
    config: { objects: N, garbage: G, blocksize: BS, runs: RUNS, work },
    blockers: [],
  };
  log(`work ${work}; ${N} objects of ${BS} bytes, ${G} garbage; ${await uptime()}`);
  try {
    for (const kind of blockers) {
      const dir = join(work, kind);
      await mkdir(dir, { recursive: true });
      out.blockers.push(await benchBlocker(kind, dir, cluster));
    }
  } finally {
    await mkdir(dirname(RESULTS), { recursive: true });
    await writeFile(RESULTS, `${JSON.stringify(out, null, 2)}\n`);
    if (!o.keep) await rm(work, { recursive: true, force: true });
  }
  for (const b of out.blockers) {
    const med = median;
    const v = b.runs.filter((r) => r.side === 'vlmc');
    const l = b.runs.filter((r) => r.side === 'library');
    const ph = (k) => med(l.map((r) => r.phases[k]));
    const markS = ph('list') + ph('mark') + ph('judge');
    console.log(
      `\n${b.blocker}: vlmc gc median ${med(v.map((r) => r.seconds)).toFixed(2)} s ` +
        `(${Math.round(N / med(v.map((r) => r.seconds)))} objects/s overall, wall ${med(v.map((r) => r.wall)).toFixed(2)} s); ` +
        `library phases: prepare ${ph('prepare')} list ${ph('list')} mark ${ph('mark')} judge ${ph('judge')} sweep ${ph('sweep')} s; ` +
        `mark+judge ${Math.round(N / markS)} objects/s, sweep ${Math.round(G / ph('sweep'))} objects/s; ` +
        `dry run ${b.dryRun.seconds.toFixed(2)} s; floor ${b.floor.seconds.toFixed(2)} s`,
    );
  }
  console.log(`\nresults: ${RESULTS}`);
}

await main();
process.exit(0);
