#!/usr/bin/env node
/**
 * `vlmc export-diff` against `rbd export-diff` of the same change, in the same run.
 *
 *   node bench/diff/run.mjs [--size-gib 10] [--base 0.05] [--changed 0.01] [--runs 3]
 *                           [--patterns whole,scattered] [--blockers file,rados]
 *                           [--dir /var/tmp] [--ceph-dir /var/tmp/archipelago-bench-ceph] [--no-verify] [--keep]
 *
 * The volume (and the RBD image) is --size-gib GiB. Its contents are written as RBD diff v1
 * streams this script encodes itself (no code of ours), applied to both sides through the
 * product paths (`vlmc import-diff FILE VOL`, `rbd import-diff FILE IMG`), so both hold the same
 * bytes and the same snapshots:
 *   s1: --base of the 4 MiB blocks (every 1/base-th block) hold random bytes;
 *   s2 (pattern "whole"): --changed of the volume rewritten as whole 4 MiB blocks at random
 *       (aligned) positions: the unit both sides track;
 *   s3 (pattern "scattered"): --changed of the volume rewritten as 64 KiB writes at random
 *       64 KiB-aligned positions: ours (a block is changed or not) sends every touched 4 MiB block
 *       whole, rbd (object-map + fast-diff flag objects, then the extents RADOS reports) sends the
 *       writes.
 * Timed, side by side in each pass (the order rotates from pass to pass):
 *   rbd:        `rbd export-diff --from-snap s1 img@s2 FILE` then `sync FILE` (vlmc export-diff
 *               fsyncs its file; rbd does not, so sync is added to its time; the time without
 *               sync is kept too);
 *   vlmc-file:  `vlmc export-diff --from-snap s1 s2 FILE` on two file blockers;
 *   vlmc-rados: the same on RADOS (pools maps and blocks of the same cluster as rbd's pool).
 * And `vlmc info s2` on each: the fixed cost of a vlmc process (node + oclif + configuration).
 * Verification (once, after the timing): every diff file is decoded (a decoder in this script)
 * and ours and rbd's are compared: the same extents for "whole"; for "scattered", ours must cover
 * rbd's extents; and each side's ranges are compared with the ranges of the change as written. Then each of our streams is applied with `rbd import-diff` onto an RBD copy
 * at s1 (resp. s2) and `rbd export` of the result is compared (SHA-256) with rbd's own image.
 *
 * Imports nothing of ours but the vlmc CLI. Starts (or reuses) a throwaway cluster with
 * scripts/ceph-cluster.sh in --ceph-dir; writes bench/results/diff.json.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gitHead, hostInfo, log, median, run, sh, uptime } from '../gc/common.mjs';

const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const BIN = join(ROOT, 'packages', 'cli', 'bin', 'vlmc.js');
const RESULTS = join(ROOT, 'bench', 'results', 'diff.json');
const MiB = 1024 * 1024;
const BLOCK = 4 * MiB;
const SMALL = 64 * 1024;

const { values: o } = parseArgs({
  options: {
    'size-gib': { type: 'string', default: '10' },
    base: { type: 'string', default: '0.05' },
    changed: { type: 'string', default: '0.01' },
    runs: { type: 'string', default: '3' },
    patterns: { type: 'string', default: 'whole,scattered' },
    blockers: { type: 'string', default: 'file,rados' },
    dir: { type: 'string', default: '/var/tmp' },
    'ceph-dir': { type: 'string', default: '/var/tmp/archipelago-bench-ceph' },
    'no-verify': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
  },
});
const SIZE = Number(o['size-gib']) * 1024 * MiB;
const BLOCKS = SIZE / BLOCK;
const RUNS = Number(o.runs);
const PATTERNS = o.patterns.split(',');
const BLOCKERS = o.blockers.split(',');

// ------------------------------------------------------------ an RBD diff v1 encoder and decoder

class DiffFile {
  constructor(fh) {
    this.fh = fh;
    this.pos = 0;
  }
  static async create(path) {
    const d = new DiffFile(await open(path, 'w'));
    await d.put(Buffer.from('rbd diff v1\n', 'latin1'));
    return d;
  }
  async put(b) {
    await this.fh.write(b, 0, b.length, this.pos);
    this.pos += b.length;
  }
  name(tag, s) {
    const n = Buffer.from(s);
    const b = Buffer.alloc(5);
    b[0] = tag.charCodeAt(0);
    b.writeUInt32LE(n.length, 1);
    return this.put(Buffer.concat([b, n]));
  }
  async size(n) {
    const b = Buffer.alloc(9);
    b[0] = 0x73;
    b.writeBigUInt64LE(BigInt(n), 1);
    await this.put(b);
  }
  async write(off, data) {
    const b = Buffer.alloc(17);
    b[0] = 0x77;
    b.writeBigUInt64LE(BigInt(off), 1);
    b.writeBigUInt64LE(BigInt(data.length), 9);
    await this.put(b);
    await this.put(data);
  }
  async end() {
    await this.put(Buffer.from('e'));
    await this.fh.close();
  }
}

/** Decodes a diff file: metadata and its data/zero extents, with a SHA-256 per data extent. */
async function decode(path) {
  const out = { from: null, to: null, size: null, writes: [], zeros: [] };
  let buf = Buffer.alloc(0);
  let need = 12;
  let state = 'header';
  let cur = null;
  const feed = (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    for (;;) {
      if (state === 'data') {
        const take = Math.min(cur.left, buf.length);
        if (take === 0) return;
        cur.hash.update(buf.subarray(0, take));
        cur.left -= take;
        buf = buf.subarray(take);
        if (cur.left === 0) {
          out.writes.push({ offset: cur.offset, length: cur.length, sha: cur.hash.digest('hex') });
          state = 'tag';
          need = 1;
        }
        continue;
      }
      if (buf.length < need) return;
      if (state === 'header') {
        if (buf.subarray(0, 12).toString('latin1') !== 'rbd diff v1\n')
          throw new Error(`${path}: no v1 header`);
        buf = buf.subarray(12);
        state = 'tag';
        need = 1;
        continue;
      }
      const tag = String.fromCharCode(buf[0]);
      if (tag === 'e') {
        state = 'end';
        return;
      }
      if (tag === 'f' || tag === 't') {
        if (buf.length < 5) return;
        const n = buf.readUInt32LE(1);
        if (buf.length < 5 + n) return;
        out[tag === 'f' ? 'from' : 'to'] = buf.subarray(5, 5 + n).toString();
        buf = buf.subarray(5 + n);
      } else if (tag === 's') {
        if (buf.length < 9) return;
        out.size = Number(buf.readBigUInt64LE(1));
        buf = buf.subarray(9);
      } else if (tag === 'w' || tag === 'z') {
        if (buf.length < 17) return;
        const offset = Number(buf.readBigUInt64LE(1));
        const length = Number(buf.readBigUInt64LE(9));
        buf = buf.subarray(17);
        if (tag === 'z') out.zeros.push({ offset, length });
        else {
          cur = { offset, length, left: length, hash: createHash('sha256') };
          state = 'data';
        }
      } else throw new Error(`${path}: unknown tag ${tag}`);
    }
  };
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) feed(chunk);
  if (state !== 'end') throw new Error(`${path}: no end record`);
  return out;
}

const sum = (xs) => xs.reduce((a, x) => a + x.length, 0);

/** Merged [offset, end) ranges. */
function ranges(exts) {
  const s = [...exts].sort((a, b) => a.offset - b.offset);
  const out = [];
  for (const e of s) {
    const last = out[out.length - 1];
    if (last && last[1] >= e.offset) last[1] = Math.max(last[1], e.offset + e.length);
    else out.push([e.offset, e.offset + e.length]);
  }
  return out;
}
const covers = (outer, inner) => {
  let i = 0;
  for (const [a, b] of inner) {
    while (i < outer.length && outer[i][1] <= a) i++;
    if (i === outer.length || outer[i][0] > a || outer[i][1] < b) return false;
  }
  return true;
};

// ------------------------------------------------------------ the contents

/** A random sample of `k` distinct integers below `n`, sorted. */
function sample(n, k) {
  const set = new Set();
  while (set.size < k) set.add(Math.floor(Math.random() * n));
  return [...set].sort((a, b) => a - b);
}

async function makeStreams(work) {
  const base = join(work, 'base.diff');
  {
    const d = await DiffFile.create(base);
    await d.name('t', 's1');
    await d.size(SIZE);
    const every = Math.round(1 / Number(o.base));
    for (let b = 0; b < BLOCKS; b += every) await d.write(b * BLOCK, randomBytes(BLOCK));
    await d.end();
  }
  const changed = Math.round(SIZE * Number(o.changed));
  const streams = { base };
  let prev = 's1';
  let snap = 1;
  for (const pattern of PATTERNS) {
    const to = `s${++snap}`;
    const path = join(work, `${pattern}.diff`);
    const d = await DiffFile.create(path);
    await d.name('f', prev);
    await d.name('t', to);
    await d.size(SIZE);
    if (pattern === 'whole') {
      for (const b of sample(BLOCKS, Math.round(changed / BLOCK)))
        await d.write(b * BLOCK, randomBytes(BLOCK));
    } else if (pattern === 'scattered') {
      for (const s of sample(SIZE / SMALL, Math.round(changed / SMALL)))
        await d.write(s * SMALL, randomBytes(SMALL));
    } else throw new Error(`unknown pattern ${pattern}`);
    await d.end();
    streams[pattern] = { path, from: prev, to, bytes: changed };
    prev = to;
  }
  return streams;
}

// ------------------------------------------------------------ main

async function main() {
  const work = await mkdtemp(join(o.dir, 'archipelago-bench-diff-'));
  const cephDir = o['ceph-dir'];
  await run(join(ROOT, 'scripts', 'ceph-cluster.sh'), ['start', cephDir]);
  const cluster = join(cephDir, 'ceph.conf');
  const ns = `bench-diff-${process.pid}`;
  const rbd = (...a) => run('rbd', ['-c', cluster, ...a]);
  const img = `rbd/${ns}`;
  const out = {
    date: new Date().toISOString(),
    host: hostInfo(),
    versions: {
      node: process.version,
      ceph: (await sh('ceph', ['-v'])).stdout.trim(),
      head: await gitHead(ROOT),
    },
    config: {
      sizeGiB: Number(o['size-gib']),
      base: Number(o.base),
      changed: Number(o.changed),
      runs: RUNS,
      work,
    },
    uptime: [await uptime()],
    patterns: {},
  };
  log(`work ${work}; ${out.uptime[0]}`);
  const confs = {};
  const rbdImages = [img];
  try {
    // ---- contents
    const streams = await makeStreams(work);
    log('streams written');
    await rbd('create', '--size', `${SIZE / MiB}M`, img);
    out.versions.rbdFeatures = JSON.parse((await rbd('info', '--format', 'json', img)).out).features;
    await rbd('import-diff', '--no-progress', streams.base, img);
    for (const p of PATTERNS) await rbd('import-diff', '--no-progress', streams[p].path, img);
    log('rbd image ready');
    for (const kind of BLOCKERS) {
      const conf = join(work, `${kind}.conf`);
      const sec =
        kind === 'file'
          ? (role) => `type = file_blocker\narchip_dir = ${join(work, kind, role)}\nunique_str = bench_diff\n`
          : (role) =>
              `type = rados_blocker\npool = ${role === 'blocks' ? 'blocks' : 'maps'}\nnamespace = ${ns}\n` +
              `ceph_conf = ${cluster}\nunique_str = bench_diff\n`;
      await writeFile(conf, `[blockerb]\n${sec('blocks')}\n[blockerm]\n${sec('maps')}`);
      confs[kind] = conf;
      const env = { ...process.env, ARCHIPELAGO_CONF: conf };
      const v = (...a) => run(process.execPath, [BIN, ...a], env);
      await v('create', '-s', `${SIZE / MiB}M`, 'vol');
      await v('import-diff', streams.base, 'vol');
      for (const p of PATTERNS) await v('import-diff', streams[p].path, 'vol');
      log(`${kind}: volume ready`);
    }

    // ---- timing
    const sides = ['rbd', ...BLOCKERS.map((b) => `vlmc-${b}`)];
    for (const p of PATTERNS) out.patterns[p] = { changedBytes: streams[p].bytes, rows: {}, passes: [] };
    const file = (side, p) => join(work, `out-${side}-${p}.diff`);
    const fixed = {};
    for (let pass = 0; pass < RUNS; pass++) {
      const order = sides.map((_, i) => sides[(i + pass) % sides.length]);
      for (const p of PATTERNS) {
        const { from, to } = streams[p];
        const up = await uptime();
        const row = { pass: pass + 1, uptime: up, order };
        for (const side of order) {
          const f = file(side, p);
          await rm(f, { force: true });
          if (side === 'rbd') {
            const a = await rbd('export-diff', '--no-progress', '--from-snap', from, `${img}@${to}`, f);
            const s = await run('sync', [f]);
            row.rbd = a.seconds + s.seconds;
            row.rbdNoSync = a.seconds;
          } else {
            const env = { ...process.env, ARCHIPELAGO_CONF: confs[side.slice(5)] };
            const r = await run(
              process.execPath,
              [BIN, 'export-diff', '--from-snap', from, to, f, '--json'],
              env,
            );
            row[side] = r.seconds;
            row[`${side}Own`] = JSON.parse(r.out).seconds;
          }
          row[`${side}Bytes`] = (await stat(f)).size;
        }
        out.patterns[p].passes.push(row);
        log(
          `pass ${pass + 1} ${p}: ${sides.map((s) => `${s} ${row[s].toFixed(2)} s (${(row[`${s}Bytes`] / MiB).toFixed(0)} MiB)`).join(', ')}  [${up.replace(/.*load/, 'load')}]`,
        );
      }
      for (const kind of BLOCKERS) {
        const env = { ...process.env, ARCHIPELAGO_CONF: confs[kind] };
        const r = await run(
          process.execPath,
          [BIN, 'info', PATTERNS.length ? streams[PATTERNS[0]].to : 's1', '--json'],
          env,
        );
        if (!fixed[kind]) fixed[kind] = [];
        fixed[kind].push(r.seconds);
      }
    }
    out.vlmcInfoSeconds = fixed;
    out.uptime.push(await uptime());

    // ---- verification
    const med = median;
    for (const p of PATTERNS) {
      const P = out.patterns[p];
      const ref = await decode(file('rbd', p));
      // The change as written (the stream both sides imported), adjacent writes merged.
      const input = await decode(streams[p].path);
      const inputRanges = ranges(input.writes);
      const sameRanges = (a, b) =>
        a.length === b.length && a.every((r, i) => r[0] === b[i][0] && r[1] === b[i][1]);
      P.rbdExtents = {
        writes: ref.writes.length,
        data: sum(ref.writes),
        zeros: ref.zeros.length,
        zeroBytes: sum(ref.zeros),
        rangesEqualInput: sameRanges(ranges(ref.writes), inputRanges),
      };
      for (const side of sides) {
        const secs = P.passes.map((r) => r[side]);
        const bytes = P.passes[P.passes.length - 1][`${side}Bytes`];
        P.rows[side] = {
          seconds: med(secs),
          min: Math.min(...secs),
          max: Math.max(...secs),
          streamMiB: bytes / MiB,
          changedMiBps: P.changedBytes / MiB / med(secs),
          streamMiBps: bytes / MiB / med(secs),
          ratioToRbd: med(secs) / med(P.passes.map((r) => r.rbd)),
          perPassRatio: P.passes.map((r) => r[side] / r.rbd),
        };
        if (side === 'rbd') P.rows[side].secondsNoSync = med(P.passes.map((r) => r.rbdNoSync));
        else P.rows[side].ownSeconds = med(P.passes.map((r) => r[`${side}Own`]));
        if (side === 'rbd') continue;
        const ours = await decode(file(side, p));
        const same =
          ours.writes.length === ref.writes.length &&
          ours.writes.every((w, i) => {
            const r = ref.writes[i];
            return w.offset === r.offset && w.length === r.length && w.sha === r.sha;
          });
        P.rows[side].extents = {
          writes: ours.writes.length,
          data: sum(ours.writes),
          zeros: ours.zeros.length,
          zeroBytes: sum(ours.zeros),
          from: ours.from,
          to: ours.to,
          size: ours.size,
          identicalToRbd: same && ours.zeros.length === ref.zeros.length,
          coversRbd: covers(ranges([...ours.writes, ...ours.zeros]), ranges([...ref.writes, ...ref.zeros])),
          rangesEqualInput: sameRanges(ranges([...ours.writes, ...ours.zeros]), inputRanges),
        };
      }
    }
    if (!o['no-verify']) {
      // Ours applied by rbd onto a copy at the first snapshot; the result must read as rbd's image.
      const base = streams.base;
      const sha = async (spec) =>
        (await run('sh', ['-c', `rbd -c ${cluster} export --no-progress ${spec} - | sha256sum`])).out.split(
          ' ',
        )[0];
      const want = {};
      for (const p of PATTERNS) want[p] = await sha(`${img}@${streams[p].to}`);
      for (const kind of BLOCKERS) {
        const chk = `${img}-chk-${kind}`;
        rbdImages.push(chk);
        await rbd('create', '--size', `${SIZE / MiB}M`, chk);
        await rbd('import-diff', '--no-progress', base, chk);
        for (const p of PATTERNS) {
          await rbd('import-diff', '--no-progress', file(`vlmc-${kind}`, p), chk);
          const got = await sha(`${chk}@${streams[p].to}`);
          out.patterns[p].rows[`vlmc-${kind}`].appliedByRbdEqualsRbd = got === want[p];
          log(
            `verify ${kind} ${p}: rbd import-diff of ours ${got === want[p] ? 'reads as' : 'DIFFERS from'} rbd's ${streams[p].to}`,
          );
        }
      }
    }
  } finally {
    await mkdir(dirname(RESULTS), { recursive: true });
    await writeFile(RESULTS, `${JSON.stringify(out, null, 2)}\n`);
    if (!o.keep) {
      for (const i of rbdImages) {
        await run('sh', [
          '-c',
          `rbd -c ${cluster} snap purge --no-progress ${i}; rbd -c ${cluster} rm --no-progress ${i}`,
        ]).catch(() => {});
      }
      if (confs.rados) {
        for (const pool of ['blocks', 'maps']) {
          await run('sh', [
            '-c',
            `rados -c ${cluster} -p ${pool} -N ${ns} ls | xargs -r -n 256 rados -c ${cluster} -p ${pool} -N ${ns} rm`,
          ]).catch((e) => log(`cleanup ${pool}: ${e.message}`));
        }
      }
      await rm(work, { recursive: true, force: true });
    }
  }
  for (const [p, P] of Object.entries(out.patterns)) {
    console.log(`\n${p} (${(P.changedBytes / MiB).toFixed(0)} MiB changed of ${o['size-gib']} GiB):`);
    for (const [side, r] of Object.entries(P.rows)) {
      console.log(
        `  ${side.padEnd(11)} ${r.seconds.toFixed(2)} s  ${r.changedMiBps.toFixed(0)} MiB/s of change  ` +
          `stream ${r.streamMiB.toFixed(0)} MiB  ratio ${r.ratioToRbd.toFixed(2)}` +
          (r.extents
            ? `  identical ${r.extents.identicalToRbd} covers ${r.extents.coversRbd} applied ${r.appliedByRbdEqualsRbd}`
            : ''),
      );
    }
  }
  console.log(`\nresults: ${RESULTS}`);
}

await main();
process.exit(0);
