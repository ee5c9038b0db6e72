#!/usr/bin/env node
/**
 * A/B of `vlmc` start-up, not a test: two (or more) built `vlmc` bins, alternated call by call in
 * the same run, on their own file stores (thin 1 TiB volumes), for `info`, `snapshot` and
 * `create --snap`. Reports the median wall ms and the median CPU ms (user + sys of the vlmc
 * process, from bash's `times`: 1 ms resolution, and less sensitive than wall time to the other
 * tenants of a shared machine) per command and bin, and B/A ratios.
 *
 *   node bench/cli/ab.mjs [--runs 21] A_BIN B_BIN [C_BIN ...]
 *
 * A bin may be prefixed by environment variables for its calls, `NAME=VALUE[,NAME=VALUE]:BIN`:
 * `ARCHIPELAGO_CLI_FAST=0:packages/cli/bin/vlmc.js` is the same build through oclif (no fast
 * dispatch), the A side of the fast dispatch's measurement.
 *
 * A bin is a packages/cli/bin/vlmc.js; to keep the "before" of a change, copy packages/cli (bin,
 * dist, package.json, node_modules) to a directory at the same depth of the tree (e.g.
 * .before/cli, with symlinks .before/<pkg> -> ../packages/<pkg>) so that its links resolve.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs, promisify } from 'node:util';

const exec = promisify(execFile);
const { values: o, positionals: bins } = parseArgs({
  allowPositionals: true,
  options: { runs: { type: 'string', default: '21' } },
});
if (bins.length < 2) throw new Error('usage: ab.mjs [--runs N] A_BIN B_BIN [C_BIN ...]');
const runs = Number(o.runs);

/** "0m0.123s" in ms. */
const ms = (t) => {
  const m = /^(\d+)m([\d.]+)s$/.exec(t);
  return m ? (Number(m[1]) * 60 + Number(m[2])) * 1000 : Number.NaN;
};

/** Wall ms (around bash) and CPU ms (the command's, from `times`) of one call. */
async function call(conf, bin, args, env = {}) {
  const t0 = process.hrtime.bigint();
  const { stdout } = await exec(
    'bash',
    ['-c', '"$@" >/dev/null || exit $?; times', 'ab', process.execPath, bin, ...args],
    { env: { ...process.env, ...env, ARCHIPELAGO_CONF: conf, ARCHIPELAGO_WIRING: 'embedded' } },
  );
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  const [u, s] = stdout.trim().split('\n').at(-1).split(/\s+/).map(ms);
  return { wall, cpu: u + s };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const tmp = await mkdtemp(join(tmpdir(), 'archip-cli-ab-'));
try {
  const sides = [];
  for (const [i, b] of bins.entries()) {
    const conf = join(tmp, `${i}.conf`);
    await writeFile(
      conf,
      `[blockerb]\ntype = file_blocker\narchip_dir = ${join(tmp, `${i}-blocks`)}\n\n` +
        `[blockerm]\ntype = file_blocker\narchip_dir = ${join(tmp, `${i}-maps`)}\n`,
    );
    const m = /^((?:\w+=[^,:]*,?)+):(.+)$/.exec(b);
    const env = m
      ? Object.fromEntries(
          m[1]
            .split(',')
            .filter(Boolean)
            .map((kv) => kv.split('=')),
        )
      : {};
    const bin = resolve(m ? m[2] : b);
    await call(conf, bin, ['create', 'v', '--size', '1T'], env);
    await call(conf, bin, ['snapshot', 'v', 'warm'], env); // and the code cache
    sides.push({ bin, conf, env, r: { info: [], snapshot: [], clone: [] } });
  }
  const load = [loadavg()[0]];
  for (let n = 0; n < runs; n++) {
    for (let k = 0; k < sides.length; k++) {
      const s = sides[(k + n) % sides.length];
      s.r.snapshot.push(await call(s.conf, s.bin, ['snapshot', 'v', `s${n}`], s.env));
      s.r.clone.push(await call(s.conf, s.bin, ['create', `c${n}`, '--snap', `s${n}`], s.env));
      s.r.info.push(await call(s.conf, s.bin, ['info', `c${n}`], s.env));
    }
    load.push(loadavg()[0]);
  }
  const ops = ['snapshot', 'clone', 'info'];
  console.log(`runs ${runs}, load average (1 min): ${load.map((x) => x.toFixed(1)).join(', ')}`);
  console.log(`| bin | ${ops.map((op) => `${op} wall | ${op} CPU`).join(' | ')} |`);
  console.log(`|---|${ops.map(() => '---:|---:').join('|')}|`);
  for (const [i, s] of sides.entries())
    console.log(
      `| ${String.fromCharCode(65 + i)}: ${bins[i]} | ${ops.map((op) => `${median(s.r[op].map((x) => x.wall)).toFixed(0)} | ${median(s.r[op].map((x) => x.cpu)).toFixed(0)}`).join(' | ')} |`,
    );
  for (let i = 1; i < sides.length; i++)
    console.log(
      `| ${String.fromCharCode(65 + i)}/A | ${ops.map((op) => ['wall', 'cpu'].map((k) => (median(sides[i].r[op].map((x) => x[k])) / median(sides[0].r[op].map((x) => x[k]))).toFixed(2)).join(' | ')).join(' | ')} |`,
    );
} finally {
  await rm(tmp, { recursive: true, force: true });
}
