/**
 * Issue 14, defect 1: two embedded `vlmc` commands on one host share the host's identity, so the
 * volume lock does not keep them apart. Before the host locks, `vlmc snapshot rw2 rw2s & vlmc resize
 * rw2 --size 80M & wait` lost the snapshot's epoch bump in 2 runs of 10 (the volume then wrote into
 * objects its snapshot still named), or lost the resize; 8 concurrent snapshots succeeded 7 times
 * but advanced the epoch by 2. Now every map change takes the volume's host lock: concurrent
 * commands wait for each other (bounded, then EBUSY naming the holder's pid) and never interleave.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadConfig, openEmbeddedRuntime } from '@archipelago/runtime';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureCluster } from '../../packages/blocker-rados/test/cluster.js';
import { Env, requireTool, sh } from '../lib/vlmc.js';

const MiB = 1024 * 1024;
const SLOW = { timeout: 300_000 };
let env: Env;
let image: Buffer;
let imagePath: string;

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** The RADOS blocker sections of a configuration on the shared test cluster, in a fresh namespace. */
async function radosSections(): Promise<string> {
  const cluster = await ensureCluster();
  const ns = `samehost-${process.pid}-${Date.now()}`;
  const section = (role: string, pool: string) =>
    `[${role}]\ntype = rados_blocker\npool = ${pool}\nnamespace = ${ns}\nceph_conf = ${cluster.conf}\nconnect_timeout = 10\n`;
  return section('blockerb', 'blocks') + section('blockerm', 'maps');
}

interface Info {
  epoch: number;
  size: number;
  writable: number;
  allocated: number;
}

async function info(name: string): Promise<Info> {
  const r = await env.vlmc('info', name, '--json');
  expect(r.code, r.stderr).toBe(0);
  return r.json as Info;
}

/** Writes 1 MiB of `byte` at offset 0 of `name` through `vlmc map` with qemu-io. */
async function writeMapped(name: string, byte: number): Promise<void> {
  const uri = await env.ok('map', name);
  const io = await sh('qemu-io', ['-f', 'raw', '-c', `write -P ${byte} 0 1M`, uri]);
  expect(io.stdout, io.stderr).toMatch(/wrote 1048576\/1048576 bytes/);
  await env.ok('unmap', name);
}

async function exported(name: string): Promise<Buffer> {
  const out = join(env.dir, `${name}.raw`);
  await env.ok('export', name, out);
  return readFile(out);
}

for (const blocker of ['file', 'rados'] as const) {
  describe(`same-host serialization of map changes (issue 14, defect 1), ${blocker} blocker`, () => {
    beforeAll(async () => {
      requireTool('qemu-io', 'qemu-utils');
      const sections = blocker === 'rados' ? await radosSections() : null;
      env =
        sections === null ? await Env.create('samehost') : await Env.create('samehost-rados', () => sections);
      // Waits for another process of this host up to lock_timeout: long enough for the others' turn.
      await writeFile(
        env.conf,
        (await readFile(env.conf, 'utf8')).replace('lock_timeout = 5', 'lock_timeout = 60'),
      );
      image = randomBytes(24 * MiB);
      imagePath = join(env.dir, 'img.raw');
      await writeFile(imagePath, image);
    }, 180_000);

    afterAll(async () => {
      await env?.dispose();
    });

    it(
      'vlmc snapshot & vlmc resize at once: both take effect, and the snapshot never changes',
      SLOW,
      async () => {
        for (let trial = 0; trial < 4; trial++) {
          const vol = `rw${trial}`;
          await env.ok('import', imagePath, vol);
          const before = await info(vol);
          expect(before.writable).toBe(before.allocated);
          const [snap, resize] = await Promise.all([
            env.vlmc('snapshot', vol, `${vol}s`),
            env.vlmc('resize', vol, '--size', '80M'),
          ]);
          expect(snap.code, snap.stderr).toBe(0);
          expect(resize.code, resize.stderr).toBe(0);
          const after = await info(vol);
          expect(after.size, `trial ${trial}: the resize took effect`).toBe(80 * MiB);
          expect(after.epoch, `trial ${trial}: the snapshot bumped the epoch once`).toBe(before.epoch + 1);
          expect(after.writable, `trial ${trial}: the volume owns nothing its snapshot names`).toBe(0);
          await writeMapped(vol, 0x77);
          // The snapshot is the image (resized or not, depending on which command went first).
          const s = await exported(`${vol}s`);
          expect(sha(s.subarray(0, image.length)), `trial ${trial}: the snapshot is the image`).toBe(
            sha(image),
          );
          expect(s.subarray(image.length).every((x) => x === 0)).toBe(true);
          const v = await exported(vol);
          expect(v.subarray(0, MiB).every((x) => x === 0x77)).toBe(true);
          expect(v.subarray(MiB, image.length).equals(image.subarray(MiB))).toBe(true);
        }
      },
    );

    it(
      '8 concurrent snapshots of one volume: each advances the epoch by one, none is lost',
      SLOW,
      async () => {
        await env.ok('create', 'race1', '--size', '16M');
        await writeMapped('race1', 0x11);
        const before = await info('race1');
        const runs = await Promise.all(
          Array.from({ length: 8 }, (_, i) => env.vlmc('snapshot', 'race1', `race1-s${i}`, '--json')),
        );
        for (const r of runs) expect(r.code, r.stderr).toBe(0);
        expect((await info('race1')).epoch, 'every snapshot advanced the epoch').toBe(before.epoch + 8);
        for (let i = 0; i < 8; i++) expect((await info(`race1-s${i}`)).writable).toBe(0);
        const first = await exported('race1-s0');
        await writeMapped('race1', 0x22);
        expect(first.equals(await exported('race1-s0'))).toBe(true);
      },
    );

    it(
      'a command that cannot get the host lock in time fails with EBUSY naming the holder',
      SLOW,
      async () => {
        await env.ok('create', 'held', '--size', '8M');
        await writeFile(
          env.conf,
          (await readFile(env.conf, 'utf8')).replace('lock_timeout = 60', 'lock_timeout = 1'),
        );
        // This test process opens the volume: it holds the host lock while the command runs.
        const rt = await openEmbeddedRuntime(loadConfig(env.conf));
        try {
          await rt.mapper.openVolume('held');
          const t0 = Date.now();
          const r = await env.vlmc('snapshot', 'held', 'held-s');
          expect(r.code).toBe(1);
          expect(r.stderr).toMatch(new RegExp(`^vlmc: EBUSY: volume "held" is busy: .*pid ${process.pid}`));
          expect(Date.now() - t0).toBeLessThan(20_000);
          expect((await env.vlmc('info', 'held-s')).code).toBe(1); // nothing half-made
        } finally {
          await rt.close();
          await writeFile(
            env.conf,
            (await readFile(env.conf, 'utf8')).replace('lock_timeout = 1', 'lock_timeout = 60'),
          );
        }
        expect((await env.vlmc('snapshot', 'held', 'held-s')).code).toBe(0);
      },
    );
  });
}
