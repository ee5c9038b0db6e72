#!/usr/bin/env node
/**
 * Snapshot / clone / info bench, not a test: the product path (`vlmc` as a user runs it, one
 * process per command) on a thin 1 TiB volume, side by side in the same run with
 *   - `rbd create` / `rbd snap create` / `rbd clone` / `rbd info` on an RBD pool (same cluster),
 *   - `qemu-img create -f qcow2` / `qemu-img snapshot -c` / a qcow2 overlay / `qemu-img info`,
 *   - `node -e 0` (what any Node CLI pays before its first line),
 *   - the same mapper operations in process (the `Mapper` API over the same kind of blocker),
 * with our file blocker and (with a cluster) our RADOS blocker. Each pass runs every side once,
 * the sides taking turns to go first; the table gives the median and spread (min–max) of wall
 * time per command, ms, and ours/reference ratios (< 1: we are faster).
 *
 *   node bench/snapshot/run.mjs [--runs 7] [--conf CEPH_CONF | --no-rados] [--out snapshot]
 *                               [--before OTHER_TREE]
 *
 * --before runs OTHER_TREE's built vlmc too (another checkout of the repository, e.g. the commit
 * before a change, built), on its own file store, as the side "vlmc before (file)".
 *
 * Without --conf (and without --no-rados) it starts a throwaway cluster (scripts/ceph-cluster.sh)
 * in a temp dir and purges it at the end. Needs `pnpm build`. Writes bench/results/<out>.json.
 */
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs, promisify } from 'node:util';

const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const VLMC = join(ROOT, 'packages', 'cli', 'bin', 'vlmc.js');
const SCRIPT = join(ROOT, 'scripts', 'ceph-cluster.sh');
const exec = promisify(execFile);

const { values: o } = parseArgs({
  options: {
    runs: { type: 'string', default: '7' },
    conf: { type: 'string' },
    'no-rados': { type: 'boolean', default: false },
    out: { type: 'string', default: 'snapshot' },
    before: { type: 'string' },
  },
});
const runs = Number(o.runs);
const TIB = 1024 ** 4;

/** CPU ms (user + sys) of each timed step, by side name and op: this VM's 2 CPUs are shared. */
const cpuOf = [];
let timeOut = '';

/**
 * Wall ms of one command (spawned under /usr/bin/time, waited for); its CPU ms (user + sys) goes
 * to `cpuOf`. Fails loudly on a non-zero exit.
 */
async function timed(cmd, args, env) {
  const t0 = process.hrtime.bigint();
  await exec('/usr/bin/time', ['-f', '%U %S', '-o', timeOut, cmd, ...args], {
    env: { ...process.env, ...env },
    maxBuffer: 1 << 24,
  });
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  const [u, sy] = readFileSync(timeOut, 'utf8').trim().split(/\s+/).slice(-2).map(Number);
  cpuOf.push((u + sy) * 1000);
  return wall;
}

async function inProcessSide(kind, blockerm, blockerb, root = ROOT, name = `in-process (${kind})`) {
  const { Mapper } = await import(pathToFileURL(join(root, 'packages/mapper/dist/index.js')).href);
  const mapper = new Mapper({ blockerm, blockerb });
  let n = 0;
  return {
    name,
    async pass() {
      const i = n++;
      const t = async (f) => {
        const c0 = process.cpuUsage();
        const t0 = process.hrtime.bigint();
        await f();
        const c = process.cpuUsage(c0);
        cpuOf.push((c.user + c.system) / 1000);
        return Number(process.hrtime.bigint() - t0) / 1e6;
      };
      return {
        create: await t(() => mapper.create(`p${i}`, { size: TIB })),
        snapshot: await t(() => mapper.snapshot(`p${i}`, `p${i}s`)),
        clone: await t(() => mapper.clone(`p${i}s`, `p${i}c`)),
        info: await t(() => mapper.info(`p${i}c`)),
      };
    },
    close: () => mapper.close(),
  };
}

function vlmcSide(kind, conf, bin = VLMC) {
  let n = 0;
  const env = { ARCHIPELAGO_CONF: conf };
  const v = (...a) => timed(process.execPath, [bin, ...a], env);
  return {
    name: `vlmc (${kind})`,
    async pass() {
      const i = n++;
      return {
        create: await v('create', `v${i}`, '--size', '1T'),
        snapshot: await v('snapshot', `v${i}`, `v${i}s`),
        clone: await v('create', `v${i}c`, '--snap', `v${i}s`),
        info: await v('info', `v${i}c`),
      };
    },
  };
}

function rbdSide(cephConf) {
  let n = 0;
  const env = { CEPH_CONF: cephConf };
  const r = (...a) => timed('rbd', a, env);
  const tag = `b${process.pid}`;
  return {
    name: 'rbd',
    async pass() {
      const i = n++;
      const img = `rbd/${tag}i${i}`;
      return {
        create: await r('create', '--size', '1T', img),
        snapshot: await r('snap', 'create', `${img}@s`),
        // Clone v2 (no protect needed): the cluster's min compat client is recent.
        clone: await r('clone', '--rbd-default-clone-format', '2', `${img}@s`, `rbd/${tag}c${i}`),
        info: await r('info', `rbd/${tag}c${i}`),
      };
    },
  };
}

function qemuSide(dir) {
  let n = 0;
  const q = (...a) => timed('qemu-img', a, {});
  return {
    name: 'qemu-img (qcow2)',
    async pass() {
      const i = n++;
      const f = join(dir, `q${i}.qcow2`);
      return {
        create: await q('create', '-q', '-f', 'qcow2', f, '1T'),
        snapshot: await q('snapshot', '-c', 's', f),
        clone: await q('create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', f, join(dir, `q${i}c.qcow2`)),
        info: await q('info', join(dir, `q${i}c.qcow2`)),
      };
    },
  };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

async function main() {
  const tmp = await mkdtemp(join(tmpdir(), 'archip-snap-bench-'));
  timeOut = join(tmp, 'time.out');
  const load = [loadavg()[0]];
  let clusterDir = null;
  let cephConf = o.conf ?? null;
  if (!cephConf && !o['no-rados']) {
    clusterDir = join(tmp, 'ceph');
    console.error('# starting a throwaway cluster...');
    await exec('bash', [SCRIPT, 'start', clusterDir]);
    cephConf = join(clusterDir, 'ceph.conf');
  }
  const { FileBlocker } = await import(pathToFileURL(join(ROOT, 'packages/blocker-file/dist/index.js')).href);
  const fileConf = join(tmp, 'file.conf');
  await writeFile(
    fileConf,
    `[blockerb]\ntype = file_blocker\narchip_dir = ${join(tmp, 'blocks')}\nunique_str = bench\n\n` +
      `[blockerm]\ntype = file_blocker\narchip_dir = ${join(tmp, 'maps')}\nunique_str = bench\n`,
  );
  const fm = new FileBlocker({ dir: join(tmp, 'ip-maps'), identity: 'bench_ip' });
  const fb = new FileBlocker({ dir: join(tmp, 'ip-blocks'), identity: 'bench_ip' });
  const sides = [vlmcSide('file', fileConf), await inProcessSide('file', fm, fb), qemuSide(tmp)];
  const closers = [() => sides[1].close(), () => fm.close(), () => fb.close()];
  if (o.before) {
    const beforeConf = join(tmp, 'before.conf');
    await writeFile(
      beforeConf,
      `[blockerb]\ntype = file_blocker\narchip_dir = ${join(tmp, 'b-blocks')}\nunique_str = bench\n\n` +
        `[blockerm]\ntype = file_blocker\narchip_dir = ${join(tmp, 'b-maps')}\nunique_str = bench\n`,
    );
    sides.push(vlmcSide('file', beforeConf, join(o.before, 'packages', 'cli', 'bin', 'vlmc.js')));
    sides.at(-1).name = 'vlmc before (file)';
    const bm = new FileBlocker({ dir: join(tmp, 'ipb-maps'), identity: 'bench_ip' });
    const bb = new FileBlocker({ dir: join(tmp, 'ipb-blocks'), identity: 'bench_ip' });
    const ipb = await inProcessSide('file', bm, bb, o.before, 'in-process before (file)');
    sides.push(ipb);
    closers.push(
      () => ipb.close(),
      () => bm.close(),
      () => bb.close(),
    );
  }
  if (cephConf) {
    const ns = `snapbench${Date.now()}`;
    const radosConf = join(tmp, 'rados.conf');
    const sect = (pool) =>
      `type = rados_blocker\npool = ${pool}\nnamespace = ${ns}\nceph_conf = ${cephConf}\nunique_str = bench\n`;
    await writeFile(radosConf, `[blockerb]\n${sect('blocks')}\n[blockerm]\n${sect('maps')}`);
    const { RadosBlocker } = await import(
      pathToFileURL(join(ROOT, 'packages/blocker-rados/dist/index.js')).href
    );
    const rm_ = await RadosBlocker.open({
      cephConf,
      pool: 'maps',
      namespace: `${ns}ip`,
      identity: 'bench_ip',
    });
    const rb = await RadosBlocker.open({
      cephConf,
      pool: 'blocks',
      namespace: `${ns}ip`,
      identity: 'bench_ip',
    });
    const ip = await inProcessSide('rados', rm_, rb);
    sides.push(vlmcSide('rados', radosConf), ip, rbdSide(cephConf));
    closers.push(
      () => ip.close(),
      () => rm_.close(),
      () => rb.close(),
    );
  }
  const nodeSide = {
    name: 'node -e 0',
    async pass() {
      return { start: await timed(process.execPath, ['-e', '0'], {}) };
    },
  };
  sides.push(nodeSide);

  // One warm-up pass (the vlmc code cache, the page cache, librbd's first connection), untimed.
  for (const s of sides) await s.pass();
  const results = new Map(sides.map((s) => [s.name, []]));
  const cpu = new Map(sides.map((s) => [s.name, []]));
  for (let r = 0; r < runs; r++) {
    const order = sides.map((_, i) => sides[(i + r) % sides.length]);
    for (const s of order) {
      cpuOf.length = 0;
      const p = await s.pass();
      results.get(s.name).push(p);
      // The steps ran in the order of their keys.
      cpu.get(s.name).push(Object.fromEntries(Object.keys(p).map((k, i) => [k, cpuOf[i]])));
    }
    load.push(loadavg()[0]);
  }
  for (const c of closers) await c().catch(() => {});
  if (clusterDir) await exec('bash', [SCRIPT, 'purge', clusterDir]).catch(() => {});
  await rm(tmp, { recursive: true, force: true });

  const ops = ['create', 'snapshot', 'clone', 'info'];
  const summarize = (from) => {
    const t = {};
    for (const [name, passes] of from) {
      t[name] = {};
      for (const op of [...ops, 'start']) {
        const xs = passes.map((p) => p[op]).filter((x) => x !== undefined);
        if (xs.length) t[name][op] = { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
      }
    }
    return t;
  };
  const table = summarize(results);
  const cpuTable = summarize(cpu);
  const cellOf = (t) => (name, op) => {
    const c = t[name]?.[op];
    return c ? `${c.median.toFixed(0)} (${c.min.toFixed(0)}–${c.max.toFixed(0)})` : '';
  };
  const cell = cellOf(table);
  const cpuCell = cellOf(cpuTable);
  const head = [`| side | ${ops.join(' | ')} |`, `|---|${ops.map(() => '---:').join('|')}|`];
  const rows = (c) =>
    sides
      .filter((s) => s !== nodeSide)
      .map((s) => `| ${s.name} | ${ops.map((op) => c(s.name, op)).join(' | ')} |`);
  const lines = [
    `runs ${runs}, ${cpus().length} CPUs, load average (1 min) during the run: ${load.map((x) => x.toFixed(1)).join(', ')}`,
    `node -e 0: ${cell('node -e 0', 'start')} ms wall, ${cpuCell('node -e 0', 'start')} ms CPU`,
    '',
    'wall ms, median (min–max)',
    ...head,
    ...rows(cell),
    '',
    'CPU ms (user + sys of the command; in process: of this process), median (min–max)',
    ...head,
    ...rows(cpuCell),
    '',
  ];
  const pairs = [
    ['vlmc (file)', 'qemu-img (qcow2)'],
    ['in-process (file)', 'in-process before (file)'],
    ['vlmc (file)', 'vlmc before (file)'],
    ['vlmc (rados)', 'rbd'],
    ['vlmc (file)', 'rbd'],
  ].filter(([a, b]) => table[a] && table[b]);
  for (const [what, t] of [
    ['wall', table],
    ['CPU', cpuTable],
  ]) {
    const ratio = (a, b) =>
      ops
        .map((op) => (t[a]?.[op] && t[b]?.[op]?.median ? (t[a][op].median / t[b][op].median).toFixed(2) : ''))
        .join(' | ');
    lines.push(
      '',
      `ratios of ${what} medians (< 1: ours faster)`,
      `| ours / reference | ${ops.join(' | ')} |`,
    );
    lines.push(
      `|---|${ops.map(() => '---:').join('|')}|`,
      ...pairs.map(([a, b]) => `| ${a} / ${b} | ${ratio(a, b)} |`),
    );
  }
  console.log(lines.join('\n'));
  const outFile = join(ROOT, 'bench', 'results', `${o.out}.json`);
  await writeFile(
    outFile,
    JSON.stringify({ when: new Date().toISOString(), runs, load, table, cpu: cpuTable }, null, 2),
  );
  console.error(`# wrote ${outFile}`);
  try {
    console.error(`# uptime: ${execFileSync('uptime').toString().trim()}`);
  } catch {}
}

await main();
