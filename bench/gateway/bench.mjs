#!/usr/bin/env node
/**
 * HTTP file gateway benchmark (not a test). In one run, on the same file and machine:
 *
 *   upload    curl -T file → archipelago-gateway (streamed, hashed, each block stored once, fsynced)
 *             vs  dd conv=fsync of the same file to disk (the reference, ratio 1.00)
 *   re-upload the same file again (every block already stored: dedup path)
 *   download  curl → /dev/null from the gateway  vs  cat file > /dev/null (both from page cache)
 *   hashing   Pithos block hashes + Merkle root in Node (4 MiB blocks, trailing zeros stripped)
 *             vs  sha256sum of the same file
 *
 * Usage: pnpm build && node bench/gateway/bench.mjs [--size-mib 1024] [--runs 3] [--dir DIR] [--keep]
 * Writes bench/results/gateway.json.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = join(ROOT, 'packages', 'archipelago', 'bin', 'archipelago-gateway.js');
const { merkleRoot, pithosBlockHash } = await import(join(ROOT, 'packages', 'mapfile', 'dist', 'index.js'));

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1024' },
    runs: { type: 'string', default: '3' },
    dir: { type: 'string' },
    keep: { type: 'boolean', default: false },
  },
});
const MiB = 1024 * 1024;
const size = Number(values['size-mib']) * MiB;
const runs = Number(values.runs);
const work = mkdtempSync(join(values.dir ?? tmpdir(), 'archip-bench-gw-'));
const src = join(work, 'file.bin');
const TOKEN = 'AUTH_tk-bench';

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}
function time(fn) {
  const t0 = performance.now();
  fn();
  return (performance.now() - t0) / 1000;
}
const sh = (cmd, args) =>
  execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 26 });

/** Starts the gateway binary on a fresh data directory; resolves { url, stop }. */
function gateway(data) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [BIN, '--data', data, '--port', '0', '--token', `${TOKEN},bench`], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (\S+)/.exec(out);
      if (m)
        resolve({
          url: m[1],
          stop: () =>
            new Promise((r) => {
              p.once('exit', r);
              p.kill('SIGTERM');
            }),
        });
    });
    p.once('exit', (c) => reject(new Error(`gateway exited with ${c}`)));
  });
}

function curl(args) {
  return sh('curl', ['-sS', '-f', '-H', `X-Auth-Token: ${TOKEN}`, ...args]).toString();
}

// ---------------------------------------------------------------- the file
process.stderr.write(`generating ${size / MiB} MiB of random data in ${work}\n`);
{
  const fd = openSync(src, 'w');
  const chunk = Buffer.allocUnsafe(16 * MiB);
  for (let done = 0; done < size; done += chunk.length) {
    randomFillSync(chunk);
    writeFileSync(fd, chunk.subarray(0, Math.min(chunk.length, size - done)));
  }
  closeSync(fd);
}
sh('sh', ['-c', `cat '${src}' > /dev/null`]); // warm the page cache for every reader alike

// ---------------------------------------------------------------- measurements
const t = { ddWrite: [], upload: [], reupload: [], cat: [], download: [], sha256sum: [], pithos: [] };
for (let r = 0; r < runs; r++) {
  process.stderr.write(`run ${r + 1}/${runs}\n`);
  const dst = join(work, 'dd.out');
  t.ddWrite.push(time(() => sh('dd', [`if=${src}`, `of=${dst}`, 'bs=4M', 'conv=fsync', 'status=none'])));
  rmSync(dst, { force: true });

  const data = join(work, `gw-${r}`);
  mkdirSync(data);
  const gw = await gateway(data);
  try {
    curl(['-X', 'PUT', `${gw.url}/bench/c`]);
    t.upload.push(time(() => curl(['-T', src, `${gw.url}/bench/c/one`])));
    t.reupload.push(time(() => curl(['-T', src, `${gw.url}/bench/c/two`])));
    t.cat.push(time(() => sh('sh', ['-c', `cat '${src}' > /dev/null`])));
    t.download.push(time(() => curl(['-o', '/dev/null', `${gw.url}/bench/c/one`])));
  } finally {
    await gw.stop();
    rmSync(data, { recursive: true, force: true });
  }

  t.sha256sum.push(time(() => sh('sha256sum', [src])));
  let root = '';
  t.pithos.push(
    time(() => {
      const fd = openSync(src, 'r');
      const buf = Buffer.allocUnsafe(4 * MiB);
      const hashes = [];
      for (;;) {
        let got = 0;
        while (got < buf.length) {
          const n = readSync(fd, buf, got, buf.length - got, null);
          if (n === 0) break;
          got += n;
        }
        if (got === 0) break;
        hashes.push(pithosBlockHash(buf.subarray(0, got)));
        if (got < buf.length) break;
      }
      closeSync(fd);
      root = merkleRoot(hashes);
    }),
  );
  void root;
}

// ---------------------------------------------------------------- report
const mbps = (s) => size / 1e6 / s;
const row = (name, key, ref, note) => ({
  name,
  seconds: median(t[key]),
  MBps: mbps(median(t[key])),
  ratio: ref ? median(t[ref]) / median(t[key]) : 1,
  note,
});
const rows = [
  row('dd conv=fsync (disk write)', 'ddWrite', null, 'reference for upload'),
  row('gateway PUT (curl -T)', 'upload', 'ddWrite', 'hash + MD5 + store once + fsync'),
  row('gateway PUT again (dedup)', 'reupload', 'ddWrite', 'every block already stored'),
  row('cat > /dev/null (disk read)', 'cat', null, 'reference for download (page cache)'),
  row('gateway GET (curl)', 'download', 'cat', 'loopback HTTP'),
  row('sha256sum', 'sha256sum', null, 'reference for hashing'),
  row('Pithos hashing (Node)', 'pithos', 'sha256sum', 'block hashes + Merkle root'),
];
const w = Math.max(...rows.map((r) => r.name.length));
console.log(`\nfile: ${size / MiB} MiB random, median of ${runs} runs, ${work}`);
console.log(
  `${'what'.padEnd(w)}  ${'seconds'.padStart(8)}  ${'MB/s'.padStart(8)}  ${'ratio'.padStart(6)}  note`,
);
for (const r of rows) {
  console.log(
    `${r.name.padEnd(w)}  ${r.seconds.toFixed(3).padStart(8)}  ${r.MBps.toFixed(0).padStart(8)}  ${r.ratio.toFixed(2).padStart(6)}  ${r.note}`,
  );
}
const result = {
  bench: 'gateway',
  date: new Date().toISOString(),
  node: process.version,
  sizeBytes: size,
  runs,
  rows,
  raw: t,
};
mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
writeFileSync(join(ROOT, 'bench', 'results', 'gateway.json'), `${JSON.stringify(result, null, 2)}\n`);
console.log(`\nwrote bench/results/gateway.json`);
if (!values.keep) rmSync(work, { recursive: true, force: true });
