#!/usr/bin/env node
/**
 * CLI bench, not a test (issue 18, "Instant snapshots and a fast CLI"): end-to-end wall time of
 * one `vlmc` process per command, as a user runs it, on a thin 1 TiB volume:
 *
 *   vlmc snapshot VOL SNAP      vs  rbd snap create IMG@SNAP   vs  qemu-img snapshot -c SNAP F.qcow2
 *   vlmc create CLONE --snap    vs  rbd clone IMG@SNAP CLONE   vs  qemu-img create -b F.qcow2 (overlay)
 *   vlmc info CLONE             vs  rbd info CLONE             vs  qemu-img info F.qcow2
 *
 * with `vlmc` on the file blocker (embedded wiring) and, with a cluster, on the RADOS blocker of
 * the same cluster as rbd; `node -e 0` is the floor every Node CLI pays. The volume, image or
 * file of a pass is created first (the `create` column, shown but not a target). Each pass runs
 * every side once, the sides taking turns to go first; the tables give the median and the spread
 * (p10–p90, min–max) of wall ms, ours/reference ratios of the medians, and the issue's targets
 * (<= 150 ms snapshot and clone, <= 120 ms info).
 *
 *   node bench/cli/run.mjs [--runs 15] [--conf CEPH_CONF | --no-rados] [--out cli]
 *                          [--before-bin OTHER/packages/cli/bin/vlmc.js] [--before-env NAME=VALUE,...]
 *                          [--label TEXT] [--no-md]
 *
 * --before-bin also runs another built vlmc (e.g. a copy of packages/cli made before a change,
 * kept at the same depth of the tree so that its node_modules links resolve), on its own file
 * store, as the side "vlmc before (file)": before/after of a start-up change in the same run.
 * --before-env gives that side environment variables (with this build's bin unless --before-bin):
 * `--before-env ARCHIPELAGO_CLI_FAST=0` is this build through oclif, without the fast dispatch.
 *
 * Without --conf (and without --no-rados) it starts a throwaway cluster (scripts/ceph-cluster.sh)
 * in a temp dir and purges it at the end. rbd clones are format 2 (no `snap protect` needed; the
 * test cluster's min compat client allows it). Needs `pnpm build`. Writes bench/results/<out>.json
 * and appends a dated section (configuration, `uptime`, tables) to bench/results/<out>.md.
 * Run it under `flock /var/tmp/bench.lock` when others bench on the machine.
 */
import * as cp from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as util from 'node:util';

const exec = util.promisify(cp.execFile);
const { cpus, loadavg, tmpdir } = os;
const { join } = path;
const ROOT = path.resolve(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), '..', '..');
const CEPH_CLUSTER = join(ROOT, 'scripts', 'ceph-cluster.sh');

const { values: o } = util.parseArgs({
  options: {
    runs: { type: 'string', default: '15' },
    conf: { type: 'string' },
    'no-rados': { type: 'boolean', default: false },
    out: { type: 'string', default: 'cli' },
    'before-bin': { type: 'string' },
    'before-env': { type: 'string' },
    label: { type: 'string', default: '' },
    'no-md': { type: 'boolean', default: false },
  },
});
const runs = Number(o.runs);
if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be a positive integer, not ${o.runs}`);

const OPS = ['snapshot', 'clone', 'info'];
const TARGET = { snapshot: 150, clone: 150, info: 120 };

/** Wall ms of one command, spawned and waited for; fails loudly (with its stderr) on a non-zero exit. */
async function timed([cmd, ...args], env) {
  const t0 = process.hrtime.bigint();
  try {
    await exec(cmd, args, { env: { ...process.env, ...env }, maxBuffer: 1 << 24 });
  } catch (e) {
    throw new Error(`${cmd} ${args.join(' ')}: ${e.stderr || e.message}`);
  }
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/**
 * A side: `steps(i)` gives pass i's command lines by column, run in that order (create first:
 * each pass works on a new volume, image or file); the result is each column's wall ms.
 */
function side(name, env, steps) {
  let n = 0;
  return {
    name,
    async pass() {
      const out = {};
      for (const [col, argv] of Object.entries(steps(n++))) out[col] = await timed(argv, env);
      return out;
    },
  };
}

const vlmcSide = (name, conf, bin = join(ROOT, 'packages', 'cli', 'bin', 'vlmc.js'), env = {}) =>
  side(name, { ...env, ARCHIPELAGO_CONF: conf, ARCHIPELAGO_WIRING: 'embedded' }, (i) => {
    const vlmc = [process.execPath, bin];
    return {
      create: [...vlmc, 'create', `v${i}`, '--size', '1T'],
      snapshot: [...vlmc, 'snapshot', `v${i}`, `v${i}s`],
      clone: [...vlmc, 'create', `v${i}c`, '--snap', `v${i}s`],
      info: [...vlmc, 'info', `v${i}c`],
    };
  });

/** rbd on pool "rbd": clones are format 2 (no `snap protect`; the test cluster allows it). */
const RBD_TAG = `cli${process.pid}`;
const rbdSide = (cephConf) =>
  side('rbd', { CEPH_CONF: cephConf }, (i) => {
    const [img, clone] = [`rbd/${RBD_TAG}i${i}`, `rbd/${RBD_TAG}c${i}`];
    return {
      create: ['rbd', 'create', '--size', '1T', img],
      snapshot: ['rbd', 'snap', 'create', `${img}@s`],
      clone: ['rbd', 'clone', '--rbd-default-clone-format', '2', `${img}@s`, clone],
      info: ['rbd', 'info', clone],
    };
  });

/** qcow2: an internal snapshot, and an overlay on the file as its "clone". */
const qemuSide = (dir) =>
  side('qemu-img (qcow2)', {}, (i) => {
    const [f, c] = [join(dir, `q${i}.qcow2`), join(dir, `q${i}c.qcow2`)];
    return {
      create: ['qemu-img', 'create', '-q', '-f', 'qcow2', f, '1T'],
      snapshot: ['qemu-img', 'snapshot', '-c', 's', f],
      clone: ['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', f, c],
      info: ['qemu-img', 'info', c],
    };
  });

/** The p-th percentile (0..100) of `xs`, linear between the two nearest ranks. */
function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  const r = (p / 100) * (s.length - 1);
  const lo = Math.floor(r);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (r - lo);
}

function sh(cmd, args) {
  try {
    return cp
      .execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
  } catch {
    return '(unavailable)';
  }
}

/** The ceph.conf of the run: --conf's, none with --no-rados, else a throwaway cluster's (purged by `purge`). */
async function cephCluster(tmp) {
  if (o.conf || o['no-rados']) return { cephConf: o.conf ?? null, throwaway: false, purge: async () => {} };
  const dir = join(tmp, 'ceph');
  console.error('# starting a throwaway cluster...');
  await exec('bash', [CEPH_CLUSTER, 'start', dir]);
  const purge = () => exec('bash', [CEPH_CLUSTER, 'purge', dir]).catch(() => {});
  return { cephConf: join(dir, 'ceph.conf'), throwaway: true, purge };
}

async function main() {
  const tmp = await fs.promises.mkdtemp(join(tmpdir(), 'archip-cli-bench-'));
  const uptimeBefore = sh('uptime', []);
  const load = [loadavg()[0]];
  const { cephConf, throwaway, purge } = await cephCluster(tmp);
  const fileConf = (tag) =>
    `[blockerb]\ntype = file_blocker\narchip_dir = ${join(tmp, `${tag}-blocks`)}\nunique_str = bench\n\n` +
    `[blockerm]\ntype = file_blocker\narchip_dir = ${join(tmp, `${tag}-maps`)}\nunique_str = bench\n`;
  await fs.promises.writeFile(join(tmp, 'file.conf'), fileConf('f'));
  const sides = [vlmcSide('vlmc (file)', join(tmp, 'file.conf')), qemuSide(tmp)];
  if (o['before-bin'] || o['before-env']) {
    await fs.promises.writeFile(join(tmp, 'before.conf'), fileConf('b'));
    const env = Object.fromEntries(
      (o['before-env'] ?? '')
        .split(',')
        .filter(Boolean)
        .map((kv) => kv.split('=')),
    );
    sides.push(vlmcSide('vlmc before (file)', join(tmp, 'before.conf'), o['before-bin'], env));
  }
  let ns = null;
  if (cephConf) {
    ns = `clibench${Date.now()}`;
    const sect = (pool) =>
      `type = rados_blocker\npool = ${pool}\nnamespace = ${ns}\nceph_conf = ${cephConf}\nunique_str = bench\n`;
    await fs.promises.writeFile(
      join(tmp, 'rados.conf'),
      `[blockerb]\n${sect('blocks')}\n[blockerm]\n${sect('maps')}`,
    );
    sides.push(vlmcSide('vlmc (rados)', join(tmp, 'rados.conf')), rbdSide(cephConf));
  }
  const nodeSide = side('node -e 0', {}, () => ({ start: [process.execPath, '-e', '0'] }));
  sides.push(nodeSide);

  try {
    // One warm-up pass (the vlmc code cache, the page cache, librados' first connection), untimed.
    for (const s of sides) await s.pass();
    const results = new Map(sides.map((s) => [s.name, []]));
    for (let r = 0; r < runs; r++) {
      const order = sides.map((_, i) => sides[(i + r) % sides.length]);
      for (const s of order) results.get(s.name).push(await s.pass());
      load.push(loadavg()[0]);
      process.stderr.write(`# pass ${r + 1}/${runs}\r`);
    }
    process.stderr.write('\n');
    report(sides, nodeSide, results, load, uptimeBefore, cephConf);
  } finally {
    // The rbd images and clones of this run on a cluster of --conf; a throwaway one goes whole.
    if (cephConf && !throwaway) await cleanRbd(cephConf).catch(() => {});
    await purge();
    await fs.promises.rm(tmp, { recursive: true, force: true });
  }
}

async function cleanRbd(cephConf) {
  const env = { ...process.env, CEPH_CONF: cephConf };
  const { stdout } = await exec('rbd', ['ls', 'rbd'], { env });
  const mine = stdout.split('\n').filter((l) => l.startsWith(`cli${process.pid}`));
  for (const img of [...mine.filter((l) => l.includes('c')), ...mine.filter((l) => !l.includes('c'))]) {
    await exec('rbd', ['snap', 'purge', `rbd/${img}`], { env }).catch(() => {});
    await exec('rbd', ['rm', '--no-progress', `rbd/${img}`], { env }).catch(() => {});
  }
}

function report(sides, nodeSide, results, load, uptimeBefore, cephConf) {
  const cols = ['create', ...OPS];
  const table = {};
  for (const [name, passes] of results) {
    table[name] = {};
    for (const op of [...cols, 'start']) {
      const xs = passes.map((p) => p[op]).filter((x) => x !== undefined);
      if (xs.length)
        table[name][op] = {
          median: percentile(xs, 50),
          p10: percentile(xs, 10),
          p90: percentile(xs, 90),
          min: Math.min(...xs),
          max: Math.max(...xs),
          runs: xs,
        };
    }
  }
  const cell = (name, op) => {
    const c = table[name]?.[op];
    return c
      ? `**${c.median.toFixed(0)}** (${c.p10.toFixed(0)}–${c.p90.toFixed(0)}; ${c.min.toFixed(0)}–${c.max.toFixed(0)})`
      : '';
  };
  const nodeMs = table['node -e 0'].start.median;
  const head = (first, ops) => [
    `| ${first} | ${ops.join(' | ')} |`,
    `|---|${ops.map(() => '---:').join('|')}|`,
  ];
  const ratio = (a, b, op) =>
    table[a]?.[op] && table[b]?.[op] ? (table[a][op].median / table[b][op].median).toFixed(2) : '';
  const pairs = [
    ['vlmc (file)', 'qemu-img (qcow2)'],
    ['vlmc (file)', 'rbd'],
    ['vlmc (rados)', 'rbd'],
    ['vlmc (rados)', 'qemu-img (qcow2)'],
    ['vlmc (file)', 'vlmc before (file)'],
  ].filter(([a, b]) => table[a] && table[b]);
  const ours = ['vlmc (file)', 'vlmc (rados)', 'vlmc before (file)'].filter((n) => table[n]);
  const verdict = (name, op) => {
    const m = table[name][op].median;
    return `${m.toFixed(0)} ${m <= TARGET[op] ? 'met' : `**missed** by ${(m - TARGET[op]).toFixed(0)}`}`;
  };
  const lines = [
    `runs ${runs} (+1 warm-up), ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), node ${process.version}, ` +
      `${sh('qemu-img', ['--version']).split('\n')[0]}, ${cephConf ? sh('rbd', ['--version']) : 'no rbd'}`,
    `vlmc: embedded wiring, thin 1 TiB volumes (4 MiB blocks), file blocker on ${tmpdir()}` +
      `${cephConf ? '; RADOS blocker on the single-node test cluster (memstore OSD, scripts/ceph-cluster.sh), pools maps/blocks' : ''}`,
    `uptime before: ${uptimeBefore}`,
    `uptime after:  ${sh('uptime', [])}`,
    `load average (1 min) after each pass: ${load.map((x) => x.toFixed(1)).join(', ')}`,
    '',
    `node -e 0 (the floor): ${cell('node -e 0', 'start')} ms`,
    '',
    'wall ms per command, **median** (p10–p90; min–max)',
    ...head('side', cols),
    ...sides
      .filter((s) => s !== nodeSide)
      .map((s) => `| ${s.name} | ${cols.map((op) => cell(s.name, op)).join(' | ')} |`),
    '',
    'ratios of the medians (< 1: ours faster)',
    ...head('ours / reference', cols),
    ...pairs.map(([a, b]) => `| ${a} / ${b} | ${cols.map((op) => ratio(a, b, op)).join(' | ')} |`),
    `| vlmc (file) / node -e 0 | ${cols.map((op) => (table['vlmc (file)'][op].median / nodeMs).toFixed(2)).join(' | ')} |`,
    '',
    'issue 18 targets, end to end (median ms)',
    ...head(
      'side',
      OPS.map((op) => `${op} ≤ ${TARGET[op]}`),
    ),
    ...ours.map((n) => `| ${n} | ${OPS.map((op) => verdict(n, op)).join(' | ')} |`),
    '',
  ];
  console.log(lines.join('\n'));
  const json = join(ROOT, 'bench', 'results', `${o.out}.json`);
  fs.writeFileSync(
    json,
    `${JSON.stringify({ when: new Date().toISOString(), runs, load, uptimeBefore, table, targets: TARGET }, null, 2)}\n`,
  );
  if (!o['no-md']) {
    const md = join(ROOT, 'bench', 'results', `${o.out}.md`);
    const title = `## ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC${o.label ? `: ${o.label}` : ''}`;
    fs.appendFileSync(
      md,
      `\n${title}\n\n\`node bench/cli/run.mjs ${process.argv.slice(2).join(' ')}\`\n\n${lines.join('\n')}`,
    );
    console.error(`# appended to ${md}`);
  }
  console.error(`# wrote ${json}`);
}

await main();
