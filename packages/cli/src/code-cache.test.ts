/**
 * bin/vlmc.js's V8 code cache: V8 checks a cache against the source's length only, so a rebuilt
 * bundle of the same length (an upgrade, imports reordered) ran the old build's code. The cache is
 * stamped with the bundle's size and mtime. Here a stand-in bundle is rebuilt with the same length
 * and the new build's output must show.
 */
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const PKG = dirname(dirname(fileURLToPath(import.meta.url)));

function run(bin: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, 'info', 'v'], (err, stdout, stderr) => {
      resolve({ code: err ? 1 : 0, stdout, stderr });
    });
  });
}

/** A fast bundle that prints `word` from `info` (both words of one length). */
const bundle = (word: string) =>
  `exports.main = (args) => { process.stdout.write(${JSON.stringify(word)} + ' ' + args.join(' ') + '\\n'); return Promise.resolve(); };\n`;

describe('the code cache of a rebuilt bundle', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('is not used for a new build of the same length', async () => {
    const root = await mkdtemp(join(tmpdir(), 'vlmc-cache-'));
    dirs.push(root);
    await mkdir(join(root, 'bin'));
    await mkdir(join(root, 'dist', 'bundle'), { recursive: true });
    await copyFile(join(PKG, 'bin', 'vlmc.js'), join(root, 'bin', 'vlmc.js'));
    await copyFile(join(PKG, 'bin', 'package.json'), join(root, 'bin', 'package.json'));
    const file = join(root, 'dist', 'bundle', 'fast.cjs');
    const bin = join(root, 'bin', 'vlmc.js');

    await writeFile(file, bundle('first'));
    expect((await run(bin)).stdout).toBe('first info v\n');
    const cache = await readFile(`${file}.cache`); // written by that call
    expect(cache.length).toBeGreaterThan(0);
    expect((await run(bin)).stdout).toBe('first info v\n'); // from the cache

    await writeFile(file, bundle('again')); // same length, another build
    await utimes(file, new Date(), new Date(Date.now() + 5000));
    expect((await run(bin)).stdout).toBe('again info v\n');
    expect((await run(bin)).stdout).toBe('again info v\n'); // and its own cache now
    expect((await readFile(`${file}.cache`)).equals(cache)).toBe(false);
  });
});
