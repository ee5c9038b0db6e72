#!/usr/bin/env node
/**
 * What FileBlocker's `revalidateWrites` (a stat and an fstat per I/O, through the thread pool)
 * would cost the endpoint's direct data path, against the fd cache kept valid by the map epoch
 * (packages/runtime/src/direct-data.ts): 4 KiB random reads and writes (write-back) on 16
 * objects of 4 MiB in the page cache, QD1 and QD32, one process, both settings alternated.
 * A script run by hand, never a test:
 *
 *   flock /var/tmp/bench.lock node bench/daemons/revalidate.mjs [--seconds 3] [--rounds 3] [--dir /var/tmp]
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { FileBlocker } from '../../packages/blocker-file/dist/index.js';

const { values: opts } = parseArgs({
  options: {
    seconds: { type: 'string', default: '3' },
    rounds: { type: 'string', default: '3' },
    dir: { type: 'string', default: '/var/tmp' },
  },
});
const MiB = 1 << 20;
const OBJECTS = 16;
const dir = await mkdtemp(join(opts.dir, 'bench-revalidate-'));

async function run(revalidateWrites, write, qd) {
  const b = new FileBlocker({ dir, sync: 'flush', revalidateWrites });
  const buf = Buffer.alloc(4096);
  const data = randomBytes(4096);
  let n = 0;
  const end = performance.now() + Number(opts.seconds) * 1000;
  const worker = async () => {
    while (performance.now() < end) {
      const name = `obj${(Math.random() * OBJECTS) | 0}`;
      const off = ((Math.random() * (4 * MiB)) / 4096) << 12;
      if (write) await b.write(name, off, data);
      else await b.readInto(name, off, buf);
      n++;
    }
  };
  await Promise.all(Array.from({ length: qd }, worker));
  await b.flush();
  await b.close();
  return n / Number(opts.seconds);
}

try {
  const setup = new FileBlocker({ dir, sync: 'flush' });
  for (let i = 0; i < OBJECTS; i++) await setup.write(`obj${i}`, 0, randomBytes(4 * MiB));
  await setup.flush();
  await setup.close();
  const rows = [];
  for (const [label, write, qd] of [
    ['4 KiB rand read, QD1', false, 1],
    ['4 KiB rand read, QD32', false, 32],
    ['4 KiB rand write, QD1', true, 1],
    ['4 KiB rand write, QD32', true, 32],
  ]) {
    const off = [];
    const on = [];
    for (let r = 0; r < Number(opts.rounds); r++) {
      off.push(await run(false, write, qd));
      on.push(await run(true, write, qd));
    }
    const med = (a) => a.sort((x, y) => x - y)[a.length >> 1];
    rows.push(
      `| ${label} | ${med(off).toFixed(0)} | ${med(on).toFixed(0)} | ${(med(on) / med(off)).toFixed(2)} |`,
    );
    console.log(rows.at(-1));
  }
  console.log(
    `\nload ${loadavg()
      .map((l) => l.toFixed(2))
      .join(
        ' ',
      )}\n\n| row | fd cache (map epoch) IOPS | revalidateWrites IOPS | ratio |\n|---|---:|---:|---:|\n${rows.join('\n')}`,
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
