#!/usr/bin/env node
/**
 * bench/daemons/hops.mjs: what each hop of a 4 KiB read through the daemons costs, at QD1, from a
 * client in this process (as the NBD endpoint is): a ping to vlmcd, a map lookup at mapperd, a read
 * straight from blockerb, and a read through vlmcd (which does the map lookup, from its cache
 * when it holds a lease, then the blockerb read). A script run by hand, never a test:
 *
 *   flock /var/tmp/bench.lock node bench/daemons/hops.mjs [--n 4000] [--dir /var/tmp]
 *
 * Uses the built packages (dist/); ARCHIPELAGO_MAP_LEASE_MS=0 in the environment turns vlmcd's
 * map cache off, for comparison.
 */
import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { run } from '../../scripts/lib/proc.mjs';
import { daemonsConfig } from './config.mjs';

const ROOT = resolve(import.meta.dirname, '../..');
const TOOL = join(ROOT, 'packages/archipelago/bin/archipelago.js');
const VLMC = join(ROOT, 'packages/cli/bin/vlmc.js');
const { values: opts } = parseArgs({
  options: { n: { type: 'string', default: '4000' }, dir: { type: 'string', default: '/var/tmp' } },
});
const N = Number(opts.n);
const ENV = { ...process.env, PATH: `/usr/bin:/usr/sbin:${process.env.PATH ?? ''}` };
const { dir, conf, segment } = await daemonsConfig(opts.dir, 'bench-hops', 1280);

const tool = (...a) => run(process.execPath, [TOOL, '-c', conf, ...a], ENV);
const vlmc = (...a) =>
  run(process.execPath, [VLMC, '-c', conf, ...a], { ...ENV, ARCHIPELAGO_WIRING: 'daemons' });

function pct(a, p) {
  const s = [...a].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

async function measure(label, fn) {
  for (let i = 0; i < 200; i++) await fn(i);
  const lat = [];
  for (let i = 0; i < N; i++) {
    const t = process.hrtime.bigint();
    await fn(i);
    lat.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  console.log(
    `${label.padEnd(34)} p50 ${pct(lat, 50).toFixed(0).padStart(5)} µs  p90 ${pct(lat, 90).toFixed(0).padStart(5)} µs  p99 ${pct(lat, 99).toFixed(0).padStart(6)} µs`,
  );
}

try {
  await tool('start');
  await vlmc('create', 'hops', '--size', '64M');
  const peer = await import(join(ROOT, 'packages/peer/dist/index.js'));
  const { Segment } = await import(join(ROOT, 'packages/libxseg/dist/segment/index.js'));
  const seg = Segment.join(segment);
  const mapper = new peer.SegmentMapper({ segment: seg, port: 11 });
  const vols = new peer.SegmentVolumes({ segment: seg, port: 20 });
  const blockerb = new peer.SegmentBlocker({ segment: seg, port: 10 });
  const MiB = 1 << 20;
  const buf = Buffer.alloc(4096);
  // fill: every block has an object
  const fill = Buffer.alloc(4 * MiB, 7);
  for (let off = 0; off < 64 * MiB; off += 4 * MiB) await vols.write('hops', off, fill);
  const objs = (await mapper.entries('hops')).map((e) => e.name);
  const rnd = (i) => ((i * 2654435761) >>> 0) % ((64 * MiB) / 4096);
  await measure('ping vlmcd', () => vols.ping());
  await measure('ping mapperd', () => mapper.ping());
  await measure('ping blockerb', () => blockerb.ping());
  await measure('mapperd mapRead 4 KiB', (i) => mapper.mapRead('hops', rnd(i) * 4096, 4096));
  await measure('blockerb readInto 4 KiB', (i) => {
    const off = rnd(i) * 4096;
    return blockerb.readInto(objs[Math.floor(off / (4 * MiB))], off % (4 * MiB), buf);
  });
  await measure('vlmcd readInto 4 KiB', (i) => vols.readInto('hops', rnd(i) * 4096, buf));
  await measure('vlmcd write 4 KiB', (i) => vols.write('hops', rnd(i) * 4096, buf));
  await vols.close('hops');
  await Promise.all([mapper.close(), vols.disconnect(), blockerb.close()]);
  seg.close();
} finally {
  await tool('stop', '-f').catch((e) => console.error(String(e)));
  await rm(dir, { recursive: true, force: true });
}
