#!/usr/bin/env node
/**
 * Import/export throughput of `vlmc`, side by side with cp and qemu-img in the same run, plus the
 * cost of snapshot and clone of a thin 1 TiB volume. Not a test: run it by hand (see README.md).
 *
 *   node bench/import-export.mjs [--size-gib 1] [--runs 3] [--dir /var/tmp] [--keep]
 *
 * The image: SIZE GiB of 4 MiB regions; every 4th region (index % 4 == 3) is all zeros, the others
 * are random bytes (incompressible, never zero). So a quarter of the image can be skipped by
 * tools that look for zeros (qemu-img writes holes there, vlmc keeps zero blocks), and three
 * quarters must be copied by everyone.
 *
 * Each measurement is one command followed by `sync`, timed together, so every tool pays for
 * getting its data to disk (vlmc syncs every object write itself; export fsyncs the file).
 * The source image is read from the page cache in every case (we do not drop caches).
 * The vlmc rows include starting the process (node + oclif, about half a second): the
 * "vlmc info" row measures that fixed cost alone.
 *
 * Writes bench/results/import-export.json.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { run } from '../scripts/lib/proc.mjs';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const BIN = join(ROOT, 'packages', 'cli', 'bin', 'vlmc.js');
const RESULTS = join(ROOT, 'bench', 'results', 'import-export.json');
const MiB = 1024 * 1024;
const REGION = 4 * MiB;

const { values: opts } = parseArgs({
  options: {
    'size-gib': { type: 'string', default: '1' },
    runs: { type: 'string', default: '3' },
    dir: { type: 'string', default: os.tmpdir() },
    keep: { type: 'boolean', default: false },
  },
});
const sizeGiB = Number(opts['size-gib']);
const runs = Math.max(1, Number(opts.runs));
if (!(sizeGiB > 0) || (sizeGiB * 1024) % 4 !== 0)
  throw new Error('--size-gib must be a positive multiple of 4 MiB');

/** Wall-clock seconds of `fn` followed by sync(1). */
async function timed(fn) {
  await run('sync', []);
  const t0 = performance.now();
  await fn();
  await run('sync', []);
  return (performance.now() - t0) / 1000;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

async function fsType(dir) {
  try {
    return (await run('stat', ['-f', '-c', '%T', dir])).trim();
  } catch {
    return 'unknown';
  }
}

async function main() {
  const work = await mkdtemp(join(opts.dir, 'archipelago-bench-'));
  const conf = join(work, 'archipelago.conf');
  await writeFile(
    conf,
    `[blockerb]\ntype = file_blocker\narchip_dir = ${join(work, 'blocks')}\nunique_str = bench\n\n` +
      `[blockerm]\ntype = file_blocker\narchip_dir = ${join(work, 'maps')}\nunique_str = bench\n`,
  );
  const env = { ...process.env, ARCHIPELAGO_CONF: conf };
  const vlmc = (...args) => run(process.execPath, [BIN, ...args, '--json'], env).then((o) => JSON.parse(o));

  const size = sizeGiB * 1024 * MiB;
  const regions = size / REGION;
  const image = join(work, 'image.raw');
  console.log(`work dir ${work} (${await fsType(work)}); image ${sizeGiB} GiB, ${runs} run(s) per row`);

  // --- the image
  const hash = createHash('sha256');
  const fd = openSync(image, 'w');
  let zeroRegions = 0;
  for (let i = 0; i < regions; i++) {
    const zero = i % 4 === 3;
    if (zero) zeroRegions++;
    const buf = zero ? Buffer.alloc(REGION) : randomBytes(REGION);
    hash.update(buf);
    writeSync(fd, buf, 0, buf.length, i * REGION);
  }
  fsyncSync(fd);
  closeSync(fd);
  const imageHash = hash.digest('hex');
  await readFile(image); // into the page cache, as for every later reader
  console.log(`image: ${regions} regions, ${regions - zeroRegions} random, ${zeroRegions} all-zero\n`);

  // --- throughput rows. The tools take turns within each run (cp, qemu-img, import, export,
  // info; then again), so a disk that slows down or speeds up during the bench affects every
  // row alike instead of whichever tool ran then.
  const tools = [];
  const measure = (name, command, prepare, fn, check) => {
    const row = { name, command, seconds: 0, min: 0, max: 0, runs: [] };
    tools.push({ row, prepare, fn, check });
    return row;
  };

  const cpOut = join(work, 'cp.raw');
  const qOut = join(work, 'qemu.raw');
  const vOut = join(work, 'vlmc.raw');
  measure(
    'cp + sync',
    'cp image.raw cp.raw && sync',
    () => rm(cpOut, { force: true }),
    () => run('cp', [image, cpOut]),
  );
  measure(
    'qemu-img convert + sync',
    'qemu-img convert -f raw -O raw image.raw qemu.raw && sync',
    () => rm(qOut, { force: true }),
    () => run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', image, qOut]),
  );
  const importRow = measure(
    'vlmc import',
    'vlmc import image.raw bench-<run> && sync',
    async (r) => {
      if (r > 0) await vlmc('rm', `bench-${r - 1}`);
    },
    (r) => vlmc('import', image, `bench-${r}`),
  );
  const vol = `bench-${runs - 1}`;
  measure(
    'vlmc export',
    'vlmc export bench-<run> vlmc.raw && sync',
    () => rm(vOut, { force: true }),
    (r) => vlmc('export', `bench-${r}`, vOut),
    async () => {
      const got = createHash('sha256')
        .update(await readFile(vOut))
        .digest('hex');
      if (got !== imageHash) throw new Error('vlmc export differs from the image');
    },
  );
  measure('vlmc info (process start)', 'vlmc info bench-<run>', null, (r) => vlmc('info', `bench-${r}`));
  for (let r = 0; r < runs; r++) {
    for (const t of tools) {
      await t.prepare?.(r);
      t.row.runs.push(await timed(() => t.fn(r)));
      await t.check?.(r);
    }
    console.log(
      `  run ${r + 1}: ${tools.map((t) => `${t.row.name} ${t.row.runs[r].toFixed(2)} s`).join(', ')}`,
    );
  }
  const rows = tools.map((t) => {
    const times = t.row.runs;
    return Object.assign(t.row, { seconds: median(times), min: Math.min(...times), max: Math.max(...times) });
  });

  const cp = rows[0].seconds;
  for (const r of rows) {
    r.mibPerSec = size / MiB / r.seconds;
    r.timeVsCp = r.seconds / cp;
  }
  const infoRow = rows.find((r) => r.name.startsWith('vlmc info'));
  infoRow.mibPerSec = null;

  // --- thin 1 TiB: snapshot and clone cost O(map), not O(data)
  const thin = [];
  const thinTime = async (name, fn) => {
    const t0 = performance.now();
    await fn();
    const seconds = (performance.now() - t0) / 1000;
    thin.push({ name, seconds });
    process.stdout.write(`  ${name}: ${seconds.toFixed(2)} s\n`);
  };
  await thinTime('vlmc create thin1t -s 1T', () => vlmc('create', 'thin1t', '-s', '1T'));
  await thinTime('vlmc snapshot thin1t thin1t-snap', () => vlmc('snapshot', 'thin1t', 'thin1t-snap'));
  await thinTime('vlmc create thin1t-clone --snap thin1t-snap', () =>
    vlmc('create', 'thin1t-clone', '--snap', 'thin1t-snap'),
  );
  const thinInfo = await vlmc('info', 'thin1t-clone');

  // --- report
  const vi = await vlmc('info', vol);
  const line = (cols, widths) =>
    cols.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ');
  const W = [28, 9, 9, 10];
  console.log(`\n${line(['tool', 'seconds', 'MiB/s', 'time/cp'], W)}`);
  for (const r of rows) {
    console.log(
      line(
        [
          r.name,
          r.seconds.toFixed(2),
          r.mibPerSec === null ? '-' : r.mibPerSec.toFixed(0),
          r.timeVsCp.toFixed(2),
        ],
        W,
      ),
    );
  }
  console.log(`\nthin ${thinInfo.objects} blocks (${(thinInfo.size / 2 ** 40).toFixed(0)} TiB):`);
  for (const t of thin) console.log(`${t.name.padEnd(46)} ${t.seconds.toFixed(2).padStart(7)} s`);
  console.log(
    `\nimported volume: ${vi.allocated} of ${vi.objects} blocks allocated (zero regions stay zero blocks)`,
  );

  const cpus = os.cpus();
  const result = {
    date: new Date().toISOString(),
    host: {
      node: process.version,
      platform: `${os.platform()} ${os.release()}`,
      cpus: cpus.length,
      cpuModel: cpus[0]?.model ?? 'unknown',
      memGiB: Math.round(os.totalmem() / 2 ** 30),
      fs: await fsType(work),
      qemuImg: (await run('qemu-img', ['--version'])).split('\n')[0],
    },
    image: {
      bytes: size,
      regionBytes: REGION,
      randomRegions: regions - zeroRegions,
      zeroRegions,
      layout: 'every 4th 4 MiB region (index % 4 == 3) all zeros, the rest random',
    },
    runs,
    method: 'median wall-clock of (command && sync); source image in page cache',
    rows,
    importAllocated: { allocated: vi.allocated, objects: vi.objects, imported: importRow.seconds },
    thin: { size: thinInfo.size, objects: thinInfo.objects, steps: thin },
  };
  await mkdir(dirname(RESULTS), { recursive: true });
  await writeFile(RESULTS, `${JSON.stringify(result, null, 2)}\n`);
  const md = [
    '# vlmc import/export vs cp and qemu-img; thin 1 TiB snapshot and clone',
    '',
    `${result.date}, ${result.host.cpus} CPUs, ${result.host.fs}, ${sizeGiB} GiB image (¼ all-zero regions), median of ${runs} interleaved runs, each command followed by sync, timed together; vlmc rows include process start.`,
    '',
    '| tool | seconds (min–max) | MiB/s | speed vs cp (target ≥ 0.8) |',
    '|---|---:|---:|---:|',
    ...rows.map(
      (r) =>
        `| ${r.name} | ${r.seconds.toFixed(2)} (${r.min.toFixed(2)}–${r.max.toFixed(2)}) | ${r.mibPerSec === null ? '-' : r.mibPerSec.toFixed(0)} | ${r.mibPerSec === null ? '-' : (1 / r.timeVsCp).toFixed(2)} |`,
    ),
    '',
    '| thin 1 TiB (262 144 blocks), one vlmc command each | seconds (target < 1) |',
    '|---|---:|',
    ...thin.map((t) => `| ${t.name} | ${t.seconds.toFixed(2)} |`),
    '',
  ].join('\n');
  const mdPath = RESULTS.replace(/\.json$/, '.md');
  await writeFile(mdPath, md);
  console.log(`\nwrote ${RESULTS} and ${mdPath}`);

  if (opts.keep) console.log(`kept ${work}`);
  else await rm(work, { recursive: true, force: true });
}

await main();
