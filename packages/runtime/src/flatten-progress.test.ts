/**
 * `flattenVolume`'s progress in the daemon wiring (issue 17): the daemons started as
 * `archipelago start` starts them (peers.ts `start`, the built peers), a clone of a 64 MiB
 * volume (16 blocks of 4 MiB, all shared) flattened by mapperd's FLATTEN while the runtime polls
 * the clone's map: `onProgress` goes from 0 up to the total, never back, and the clone reads the
 * same, with nothing left shared.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sharedBlocks } from '@archipelago/mapper';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LoadedConfig, loadConfig, serializeConfig } from './config.js';
import { start, stop } from './peers.js';
import { Session } from './session.js';
import { createVolume, exportImage, flattenVolume, importImage, snapshotVolume } from './volumes.js';

const MiB = 2 ** 20;
const BLOCKS = 16;

let dir: string;
let conf: string;
let loaded: LoadedConfig | undefined;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'archip-flatprog-'));
  conf = join(dir, 'archipelago.conf');
  // Each peer on one port (vlmcd on 20..30), 16 requests at a time; blockerb two at a time, so
  // the flatten's 16 copy-ups (at most 16 at once) finish in waves.
  const ports = { blockerb: 10, blockerm: 12, mapperd: 11, vlmcd: 20 }; // the order they start in
  const peers = Object.fromEntries(
    Object.entries(ports).map(([role, p]) => [role, { portno_start: p, portno_end: p, nr_ops: 16 }]),
  );
  const xseg = {
    SEGMENT_PORTS: 128,
    SEGMENT_DYNPORTS: 64,
    SEGMENT_SIZE: 400,
    VTOOL_START: 100,
    VTOOL_END: 110,
  };
  writeFileSync(
    conf,
    serializeConfig({
      // The peers stay root: the test's directories are not reachable by another account.
      ARCHIPELAGO: { USER: 'root', GROUP: 'root', RUN_DIR: join(dir, 'run') },
      XSEG: { ...xseg, segment_name: `flatprog${process.pid}` },
      PEERS: { ROLES: Object.keys(ports).join(' ') },
      blockerb: { ...peers.blockerb, type: 'file_blocker', archip_dir: join(dir, 'blocks'), nr_ops: 2 },
      blockerm: { ...peers.blockerm, type: 'file_blocker', archip_dir: join(dir, 'maps') },
      mapperd: { ...peers.mapperd, blockerb_port: ports.blockerb, blockerm_port: ports.blockerm },
      vlmcd: { ...peers.vlmcd, portno_end: 30, blocker_port: ports.blockerb, mapper_port: ports.mapperd },
    }),
  );
  loaded = loadConfig(conf, { env: {} });
  await start(loaded, undefined, () => {});
});

afterAll(async () => {
  if (loaded) await stop(loaded, undefined, { force: true }, () => {}).catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('flattenVolume through mapperd (daemon wiring)', () => {
  it('reports the blocks no longer shared, increasing, ending at the total', async () => {
    const image = randomBytes(BLOCKS * 4 * MiB);
    const file = join(dir, 'image');
    writeFileSync(file, image);
    const s = new Session({ config: conf });
    try {
      expect((await s.runtime()).wiring).toBe('daemons');
      await importImage(s, file, 'base');
      await snapshotVolume(s, 'base', 'base-s');
      await createVolume(s, 'c', { snap: 'base-s' });

      const seen: Array<[number, number]> = [];
      const out = await flattenVolume(s, 'c', { onProgress: (d, t) => seen.push([d, t]), pollMs: 5 });
      expect(out).toMatchObject({ name: 'c', copied: BLOCKS, parent: 'base-s' });
      expect(seen[0]).toEqual([0, BLOCKS]);
      expect(seen.at(-1)).toEqual([BLOCKS, BLOCKS]);
      for (let i = 1; i < seen.length; i++) {
        expect(seen[i]![1]).toBe(BLOCKS);
        expect(seen[i]![0]).toBeGreaterThan(seen[i - 1]![0]);
      }
      // Polled while mapperd copied: some count between none and all was seen.
      expect(
        seen.some(([d]) => d > 0 && d < BLOCKS),
        JSON.stringify(seen),
      ).toBe(true);

      const rt = await s.runtime();
      expect(sharedBlocks('c', await rt.mapper.entries('c'))).toEqual([]);
      await exportImage(s, 'c', join(dir, 'c.out'));
      expect(sha(readFileSync(join(dir, 'c.out')))).toBe(sha(image));
    } finally {
      await s.close();
    }
  }, 30_000);
});
