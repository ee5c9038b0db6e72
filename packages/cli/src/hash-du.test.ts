/**
 * `vlmc hash`, `vlmc du`, cloning from a hashed map and `vlmc gc`, run as a user runs them: the built CLI
 * spawned with a temporary configuration. Build first: `npx tsc --build packages/cli`.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileBlocker } from '@archipelago/blocker-file';
import { merkleRoot, pithosBlockHash, ZERO_BLOCK } from '@archipelago/mapfile';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testConf } from './__fixtures__/conf.js';

const PKG = dirname(dirname(fileURLToPath(import.meta.url)));
const BIN = join(PKG, 'bin', 'vlmc.js');
const DIST = join(PKG, 'dist', 'commands', 'hash.js');
const MiB = 1024 * 1024;
const BS = 4 * MiB;

let dir: string;
let env: NodeJS.ProcessEnv;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function vlmc(args: string[]): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env, maxBuffer: 16 * MiB }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

async function ok(args: string[]): Promise<string> {
  const r = await vlmc(args);
  if (r.code !== 0) throw new Error(`vlmc ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

async function json<T = Record<string, unknown>>(args: string[]): Promise<T> {
  return JSON.parse(await ok([...args, '--json'])) as T;
}

/** A block of pseudo-random bytes from `seed` (deterministic). */
function block(seed: number, size = BS): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = seed * 2654435761 || 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeInt32LE(x | 0, i);
  }
  return b;
}

async function contentObjects(): Promise<string[]> {
  const b = new FileBlocker({ dir: join(dir, 'data', 'blocks'), identity: 'probe_1' });
  const out: string[] = [];
  for await (const n of b.list()) if (/^[0-9a-f]{64}$/.test(n)) out.push(n);
  await b.close();
  return out.sort();
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  if (!existsSync(DIST)) {
    throw new Error(`the CLI is not built (${DIST} is missing): run "npx tsc --build packages/cli" first`);
  }
  dir = await mkdtemp(join(tmpdir(), 'vlmc-hash-'));
  const conf = testConf(join(dir, 'data'), 'hostA');
  await writeFile(join(dir, 'a.conf'), conf);
  env = {
    ...process.env,
    ARCHIPELAGO_CONF: join(dir, 'a.conf'),
    XDG_DATA_HOME: join(dir, 'xdg'),
    NO_COLOR: '1',
  };
  delete env.VLMC_DEBUG;
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('vlmc hash, du and clone from a hash', { timeout: 300_000 }, () => {
  it('hashes two snapshots with shared content, storing each distinct block once', async () => {
    const b1 = block(1);
    const b2 = block(2);
    const b3 = block(3);
    const tail = Buffer.concat([block(4, MiB), Buffer.alloc(MiB)]);
    // Image A: b1 b2 zero b1 tail(2 MiB: 1 MiB data + 1 MiB zeros); image B: b2 b3 b1.
    const imgA = Buffer.concat([b1, b2, Buffer.alloc(BS), b1, tail]);
    const imgB = Buffer.concat([b2, b3, b1]);
    await writeFile(join(dir, 'a.raw'), imgA);
    await writeFile(join(dir, 'b.raw'), imgB);
    await ok(['import', join(dir, 'a.raw'), 'ha']);
    await ok(['import', join(dir, 'b.raw'), 'hb']);

    const notSnap = await vlmc(['hash', 'ha']);
    expect(notSnap.code).toBe(1);
    expect(notSnap.stderr).toMatch(/^vlmc: ENOTSNAPSHOT: /);

    await ok(['snapshot', 'ha', 'ha-s']);
    await ok(['snapshot', 'hb', 'hb-s']);
    const before = await contentObjects();
    expect(before).toEqual([]);

    // Human output: the name alone on stdout (no progress bar: stderr is not a terminal).
    const r = await vlmc(['hash', 'ha-s']);
    expect(r.code, r.stderr).toBe(0);
    const hashesA = [b1, b2, Buffer.alloc(BS), b1, tail].map((b) => pithosBlockHash(b));
    expect(hashesA[2]).toBe(ZERO_BLOCK);
    const rootA = merkleRoot(hashesA);
    expect(r.stdout).toBe(`${rootA}\n`);
    expect(r.stderr).toBe('');

    const hb = await json<{
      name: string;
      root: string;
      existed: boolean;
      blocks: number;
      contentBlocks: number;
    }>(['hash', 'hb-s']);
    expect(hb).toMatchObject({
      name: merkleRoot([b2, b3, b1].map((b) => sha256(b))),
      existed: false,
      blocks: 3,
    });
    expect(await contentObjects()).toEqual(
      [sha256(b1), sha256(b2), sha256(b3), sha256(block(4, MiB))].sort(),
    );

    // Again: the same name, nothing new.
    const again = await json<{ name: string; existed: boolean }>(['hash', 'ha-s']);
    expect(again).toMatchObject({ name: rootA, existed: true });

    const info = await json(['info', rootA]);
    expect(info).toMatchObject({ readonly: true, size: imgA.length, allocated: 4, writable: 0 });

    // Clone from the hash and read it back byte for byte.
    await ok(['create', 'from-hash', '--snap', rootA]);
    await ok(['export', 'from-hash', join(dir, 'out.raw')]);
    expect(sha256(await readFile(join(dir, 'out.raw')))).toBe(sha256(imgA));

    // du of the hashed map: 4 allocated blocks, 3 distinct objects; b1 twice.
    const du = await json<Record<string, number>>(['du', rootA]);
    expect(du).toMatchObject({
      size: imgA.length,
      blocks: 5,
      allocated: 4,
      objects: 3,
      contentObjects: 3,
      bytesStored: 2 * BS + MiB,
      bytesReferenced: 3 * BS + MiB,
      bytesDeduplicated: BS,
      missingObjects: 0,
    });
    // b1 and b2 are shared with B's hashed map and the clone; the tail with the clone only.
    expect(du.bytesShared).toBe(2 * BS + MiB);

    const all = await json<Record<string, number>>(['du']);
    expect(all.contentObjects).toBe(4);
    expect(all.blockerObjects).toBeGreaterThanOrEqual(4);
    expect(all.bytesDeduplicated).toBeGreaterThan(0);
    expect(all.unreferencedObjects).toBe(0);
    const human = await ok(['du', rootA]);
    expect(human).toMatch(/^deduplicated: +4 MiB \(4194304 bytes\)$/m);
  });

  it('fails cleanly for a missing name', async () => {
    const r = await vlmc(['hash', 'nope']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^vlmc: ENOENT_VOLUME: /);
    const d = await vlmc(['du', 'nope']);
    expect(d.stderr).toMatch(/^vlmc: ENOENT_VOLUME: /);
  });
});

describe('vlmc gc', { timeout: 120_000 }, () => {
  it('snapshot, rm, rm leaks nothing after vlmc gc; du tells what gc frees; a dry run frees nothing', async () => {
    const img = Buffer.concat([block(11), block(12), block(13)]);
    await writeFile(join(dir, 'g.raw'), img);
    await ok(['import', join(dir, 'g.raw'), 'gv']);
    await ok(['snapshot', 'gv', 'gs']);
    await ok(['remove', 'gv']);
    await ok(['remove', 'gs']);

    const before = await json<Record<string, number>>(['du']);
    expect(before.unreferencedObjects).toBe(3);
    expect(before.unreferencedBytes).toBe(img.length);
    expect(before.reclaimableBytes).toBe(img.length);

    const dry = await json(['gc', '--dry-run']);
    expect(dry).toMatchObject({ dryRun: true, reclaimableObjects: 3, freedObjects: 0 });

    const out = await ok(['gc']);
    // (the map blocks: the removed maps' lineage records)
    expect(out).toMatch(/^freed: +3 objects, 12 MiB \(12582912 bytes\); \d+ map blocks$/m);
    expect(await ok(['du'])).toMatch(/^unreferenced: +0 objects, 0 B \(0 bytes\)\nreclaimable: +0 objects/m);
  });
});
