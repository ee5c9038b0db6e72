#!/usr/bin/env node
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
/**
 * Quickstart: a first tour of thin volumes with the built `vlmc`, checked byte for byte.
 *
 *   pnpm build && pnpm quickstart [--cleanup]
 *
 * Uses the configuration vlmc itself would use: ARCHIPELAGO_CONF if set, else
 * /etc/archipelago/archipelago.conf if it exists, else the embedded default under
 * $XDG_DATA_HOME/archipelago (or ~/.local/share/archipelago), created on first use.
 *
 * Steps:
 *  1. generate a 64 MiB raw disk image: random data, with some 4 MiB regions left all zero;
 *  2. `vlmc import` it as volume qs-<timestamp>;
 *  3. `vlmc snapshot` the volume, and `vlmc create --snap` a clone of the snapshot;
 *  4. write a 1 MiB pattern into the clone. vlmc has no `write` command, so this step uses the
 *     same library the CLI is built on (loadConfig + openRuntime from packages/runtime/dist): the
 *     composer writes across a data block and a zero block, which copies both up;
 *  5. `vlmc export` the volume, the snapshot and the clone, and compare each with what it must
 *     hold (SHA-256): the original image twice, the original with the pattern once;
 *  6. check that no step left a volume locked.
 * Prints each step with its duration, then "quickstart OK"; exits 1 on any mismatch or failure.
 * The volumes are kept so you can look at them (`vlmc ls`, `vlmc info`); --cleanup removes them.
 */
import { exec } from './lib/proc.mjs';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const CLI = join(ROOT, 'packages', 'cli');
const BIN = join(CLI, 'bin', 'vlmc.js');
const LIB = join(ROOT, 'packages', 'runtime', 'dist', 'index.js');
const MiB = 1024 * 1024;
const BLOCK = 4 * MiB;
const IMAGE_SIZE = 64 * MiB;
/** 4 MiB regions left all zero (16 regions in all). */
const ZERO_REGIONS = new Set([1, 3, 6, 7, 12, 15]);
/** The 1 MiB pattern straddles region 2 (data) and region 3 (zeros). */
const PATTERN_OFFSET = 3 * BLOCK - 512 * 1024;
const PATTERN_SIZE = MiB;

const cleanup = process.argv.includes('--cleanup');
const rows = [];
let failed = false;

async function vlmc(args) {
  const r = await exec(process.execPath, [BIN, ...args, '--json']);
  let parsed;
  try {
    parsed = JSON.parse(r.stdout);
  } catch {
    parsed = undefined;
  }
  if (r.code === 0 && parsed !== undefined) return parsed;
  const e = parsed?.error;
  throw new Error(
    `vlmc ${args.join(' ')} failed: ${e ? `${e.code}: ${e.message}` : (r.stderr || r.stdout).trim()}`,
  );
}

/** Runs one step, timing it; `check` returns null when fine or a string saying what is wrong. */
async function step(name, detail, fn) {
  const t0 = performance.now();
  let result;
  let problem = null;
  try {
    result = await fn();
    if (result && typeof result === 'object' && 'problem' in result) problem = result.problem;
  } catch (e) {
    problem = e instanceof Error ? e.message : String(e);
  }
  const seconds = (performance.now() - t0) / 1000;
  rows.push({ step: name, detail, seconds, ok: problem === null });
  process.stdout.write(
    `${name.padEnd(18)} ${seconds.toFixed(3).padStart(8)}  ${(problem === null ? 'ok' : 'FAILED').padEnd(6)}  ${detail}\n`,
  );
  if (problem !== null) {
    failed = true;
    process.stdout.write(`      ${problem}\n`);
    throw new Error(problem);
  }
  return result;
}

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

async function main() {
  if (!existsSync(LIB) || !existsSync(join(CLI, 'dist', 'commands', 'import.js'))) {
    console.error(
      'quickstart: the CLI is not built; run "pnpm build" (or "npx tsc --build packages/cli") first',
    );
    process.exit(1);
  }
  const { loadConfig, openRuntime } = await import(pathToFileURL(LIB).href);
  const loaded = loadConfig();
  console.log(`configuration: ${loaded.path} (${loaded.source}${loaded.created ? ', created now' : ''})`);
  console.log(
    `data objects in ${loaded.config.blockerb.archip_dir}, maps in ${loaded.config.blockerm.archip_dir}\n`,
  );

  const work = await mkdtemp(join(tmpdir(), 'archipelago-quickstart-'));
  const stamp = new Date().toISOString().replace(/[-:T]/g, '').replace(/\..*$/, '').concat(`-${process.pid}`);
  const vol = `qs-${stamp}`;
  const snap = `${vol}-snap`;
  const clone = `${vol}-clone`;
  const image = join(work, 'disk.img');
  let original;
  let expectedClone;

  console.log(`${'step'.padEnd(18)} ${'seconds'.padStart(8)}  ${'result'.padEnd(6)}  detail`);
  try {
    await step('generate image', `64 MiB, ${ZERO_REGIONS.size} of 16 regions all zero`, async () => {
      const parts = [];
      for (let i = 0; i < IMAGE_SIZE / BLOCK; i++)
        parts.push(ZERO_REGIONS.has(i) ? Buffer.alloc(BLOCK) : randomBytes(BLOCK));
      original = Buffer.concat(parts);
      await writeFile(image, original);
      expectedClone = Buffer.from(original);
      const pattern = Buffer.alloc(PATTERN_SIZE);
      for (let i = 0; i < PATTERN_SIZE; i += 16) pattern.write('archipelago-qs!\n', i, 'latin1');
      pattern.copy(expectedClone, PATTERN_OFFSET);
      return null;
    });

    await step('import', `vlmc import disk.img ${vol}`, async () => {
      const r = await vlmc(['import', image, vol]);
      const want = 16 - ZERO_REGIONS.size;
      if (r.written !== want || r.zeroSkipped !== ZERO_REGIONS.size) {
        return {
          problem: `expected ${want} blocks written and ${ZERO_REGIONS.size} skipped, got ${r.written} and ${r.zeroSkipped}`,
        };
      }
      return null;
    });

    await step('snapshot', `vlmc snapshot ${vol} ${snap}`, () =>
      vlmc(['snapshot', vol, snap]).then(() => null),
    );
    await step('clone', `vlmc create ${clone} --snap ${snap}`, () =>
      vlmc(['create', clone, '--snap', snap]).then(() => null),
    );

    await step(
      'write to clone',
      `1 MiB pattern at byte ${PATTERN_OFFSET} (library: composer.write)`,
      async () => {
        const rt = await openRuntime(loadConfig());
        try {
          const pattern = expectedClone.subarray(PATTERN_OFFSET, PATTERN_OFFSET + PATTERN_SIZE);
          await rt.composer.write(clone, PATTERN_OFFSET, pattern);
          await rt.composer.flush(clone);
          const back = await rt.composer.read(clone, PATTERN_OFFSET, PATTERN_SIZE);
          if (!back.equals(pattern)) return { problem: 'reading the pattern back gave other bytes' };
        } finally {
          await rt.close(); // closes the clone: releases the lock the write took
        }
        return null;
      },
    );

    const originalHash = sha256(original);
    const cloneHash = sha256(expectedClone);
    for (const [name, want, wantHash, label] of [
      [vol, original, originalHash, 'original'],
      [snap, original, originalHash, 'original'],
      [clone, expectedClone, cloneHash, 'original + pattern'],
    ]) {
      const out = join(work, `${name}.raw`);
      await step(
        `export ${name === vol ? 'volume' : name === snap ? 'snapshot' : 'clone'}`,
        `vlmc export ${name}`,
        () => vlmc(['export', name, out]).then(() => null),
      );
      await step('  verify sha256', `== ${label}`, async () => {
        const got = await readFile(out);
        const st = await stat(out);
        if (got.length !== want.length) return { problem: `size ${got.length}, expected ${want.length}` };
        if (sha256(got) !== wantHash) {
          let at = 0;
          while (at < got.length && got[at] === want[at]) at++;
          return { problem: `sha256 differs (first differing byte at ${at})` };
        }
        if (st.blocks * 512 >= st.size) return { problem: 'the export is not sparse' };
        return null;
      });
    }

    await step('locks released', 'vlmc info: no owner on any of the three', async () => {
      for (const name of [vol, snap, clone]) {
        const info = await vlmc(['info', name]);
        if (info.lockOwner !== null) return { problem: `${name} is still locked by ${info.lockOwner}` };
      }
      return null;
    });

    if (cleanup) {
      await step('cleanup', 'vlmc rm clone, snapshot, volume', async () => {
        for (const name of [clone, snap, vol]) await vlmc(['rm', name]);
        return null;
      });
    }
  } catch {
    // already reported by step()
  } finally {
    await rm(work, { recursive: true, force: true });
  }

  const total = rows.reduce((s, r) => s + r.seconds, 0);
  console.log(`${'total'.padEnd(18)} ${total.toFixed(3).padStart(8)}`);
  if (failed) {
    console.log('\nquickstart FAILED');
    process.exit(1);
  }
  if (!cleanup) {
    console.log(
      `\nvolumes kept: ${vol}, ${snap}, ${clone} (try: vlmc info ${clone}; remove with: vlmc rm NAME)`,
    );
  }
  console.log('quickstart OK');
}

await main();
