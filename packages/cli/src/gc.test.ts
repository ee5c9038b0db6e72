/**
 * `vlmc gc` and `vlmc du`'s reclaimable, run as a user runs them: the built CLI spawned with a
 * temporary configuration. Build first: `npx tsc --build packages/cli`.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testConf } from './__fixtures__/conf.js';

const PKG = dirname(dirname(fileURLToPath(import.meta.url)));
const BIN = join(PKG, 'bin', 'vlmc.js');
const DIST = join(PKG, 'dist', 'commands', 'gc.js');
const MiB = 1024 * 1024;

let dir: string;
let env: NodeJS.ProcessEnv;

function vlmc(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
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

const json = async <T = Record<string, number>>(args: string[]): Promise<T> =>
  JSON.parse(await ok([...args, '--json'])) as T;

beforeAll(async () => {
  if (!existsSync(DIST)) {
    throw new Error(`the CLI is not built (${DIST} is missing): run "npx tsc --build packages/cli" first`);
  }
  dir = await mkdtemp(join(tmpdir(), 'vlmc-gc-'));
  await writeFile(join(dir, 'a.conf'), testConf(join(dir, 'data'), 'hostA'));
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

describe('vlmc gc', { timeout: 120_000 }, () => {
  it('snapshot, rm, rm leaks nothing after vlmc gc; du tells what gc frees; a dry run frees nothing', async () => {
    const img = Buffer.alloc(3 * 4 * MiB, 7);
    img.fill(9, 4 * MiB, 8 * MiB);
    await writeFile(join(dir, 'v.raw'), img);
    await ok(['import', join(dir, 'v.raw'), 'v']);
    await ok(['snapshot', 'v', 's']);
    await ok(['remove', 'v']);
    await ok(['remove', 's']);

    const before = await json(['du']);
    expect(before.unreferencedObjects).toBe(3);
    expect(before.unreferencedBytes).toBe(img.length);
    expect(before.reclaimableBytes).toBe(img.length);

    const dry = await json(['gc', '--dry-run']);
    expect(dry).toMatchObject({ dryRun: true, reclaimableObjects: 3, freedObjects: 0 });

    const out = await ok(['gc']);
    expect(out).toMatch(/^freed: +3 objects, 12 MiB \(12582912 bytes\); 0 map blocks$/m);
    expect(await ok(['du'])).toMatch(/^unreferenced: +0 objects, 0 B \(0 bytes\)\nreclaimable: +0 objects/m);
  });
});
