/**
 * Defect 2 of issue 14 with a real process and kill -9, as it was reproduced: a rename runs as a
 * process of its own over a file store, strace holds it at the entry of its 4th rename(2) (the
 * file blocker replaces a map object by renaming a temp file over it: the new name's 2 map blocks,
 * the new name's header, then the old name's header, which before this fix marked it deleted and
 * now commits the rename), and it is killed there with SIGKILL. The names are then used as a user
 * would: written, removed. Needs strace; the process is the mapper's sources bundled with esbuild.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileBlocker } from '@archipelago/blocker-file';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { aliasing, IDENTITY, outcome } from './__fixtures__/crash.js';
import { get, put } from './__fixtures__/stack.js';
import { Mapper } from './mapper.js';

const BS = 4096;
const A0 = Buffer.alloc(BS, 0xa0);
const A33 = Buffer.alloc(BS, 0xa3);

const hasStrace = (() => {
  try {
    execFileSync('strace', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe.skipIf(!hasStrace)(
  'vlmc rename killed with SIGKILL between writing the new map and the old header',
  () => {
    let work: string;
    let child: string;
    beforeAll(async () => {
      work = await mkdtemp(join(tmpdir(), 'archip-rename-kill-'));
      child = join(work, 'rename-child.mjs');
      await build({
        entryPoints: [new URL('./__fixtures__/rename-child.ts', import.meta.url).pathname],
        bundle: true,
        platform: 'node',
        format: 'esm',
        target: 'node20',
        conditions: ['source'],
        outfile: child,
        logLevel: 'error',
      });
    });
    afterAll(async () => {
      await rm(work, { recursive: true, force: true });
    });

    it('leaves one volume with its data: writing one name never changes the other, removing one keeps the other’s', async () => {
      const dir = join(work, 'store');
      const b = new FileBlocker({ dir, identity: IDENTITY });
      let m = new Mapper({ blockerm: b, blockerb: b, lockTimeoutMs: 200 });
      await m.create('v', { size: 40 * BS, blocksize: BS });
      await put(m, b, 'v', 0, A0);
      await put(m, b, 'v', 33 * BS, A33);
      await m.close();

      // strace holds the 4th rename(2) for 5 s. It counts each thread's calls: with one libuv
      // thread, every rename(2) of the process is that thread's. Detached: its own process
      // group, killed whole.
      const traced: ChildProcess = spawn(
        'strace',
        [
          ...['-f', '-qq', '-o', '/dev/null', '-e', 'trace=rename'],
          ...['-e', 'inject=rename:delay_enter=5000000:when=4'],
          ...[process.execPath, child, dir, 'v', 'w'],
        ],
        {
          detached: true,
          stdio: ['ignore', 'ignore', 'pipe'],
          env: { ...process.env, UV_THREADPOOL_SIZE: '1' },
        },
      );
      let stderr = '';
      traced.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      const killed = new Promise<void>((r) => traced.once('exit', () => r()));
      await until(
        () => files(dir).then((f) => f.includes('w')),
        10_000,
        traced,
        () => stderr,
      );
      await new Promise((r) => setTimeout(r, 300)); // in the 4th rename's 5 s delay now
      expect(traced.exitCode, `the rename process went on: ${stderr}`).toBeNull();
      process.kill(-traced.pid!, 'SIGKILL');
      await killed;

      m = new Mapper({ blockerm: b, blockerb: b, lockTimeoutMs: 200 });
      const live: string[] = [];
      for (const n of ['v', 'w']) if ((await outcome(get(m, b, n, 0, BS))) === 'ok') live.push(n);
      for (const x of live) {
        const others = live.filter((y) => y !== x);
        const before = await Promise.all(others.map((y) => get(m, b, y, 0, BS)));
        await put(m, b, x, 0, Buffer.alloc(BS, 0xbb));
        for (const [i, y] of others.entries())
          expect((await get(m, b, y, 0, BS)).equals(before[i]!), `writing ${x} changed ${y}`).toBe(true);
      }
      if (live.length > 1) {
        await m.remove(live[0]!);
        for (const y of live.slice(1))
          expect(
            (await get(m, b, y, 33 * BS, BS)).equals(A33),
            `removing ${live[0]} destroyed ${y}'s data`,
          ).toBe(true);
      }
      // Killed before its commit, the rename did not happen: v is the volume, w was undone.
      expect(live).toEqual(['v']);
      expect((await get(m, b, 'v', 33 * BS, BS)).equals(A33)).toBe(true);
      expect(await outcome(m.info('w'))).toBe('ENOENT_VOLUME');
      expect(await aliasing(m)).toEqual([]);
      // The killed process's locks were taken over; the rename can be done now.
      expect((await m.rename('v', 'w')).name).toBe('w');
      expect((await get(m, b, 'w', 33 * BS, BS)).equals(A33)).toBe(true);
      await m.close();
      expect(await b.lockInfo('v')).toBeNull();
      expect(await b.lockInfo('w')).toBeNull();
      await b.close();
    });

    /** The names of the files under `dir` (objects are stored in hashed subdirectories). */
    async function files(dir: string): Promise<string[]> {
      const all = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
      return all.map((p) => p.split('/').pop()!);
    }

    async function until(
      cond: () => Promise<boolean>,
      ms: number,
      p: ChildProcess,
      stderr: () => string,
    ): Promise<void> {
      const end = Date.now() + ms;
      while (!(await cond())) {
        if (p.exitCode !== null)
          throw new Error(`the rename process exited (${p.exitCode}) before the 4th rename: ${stderr()}`);
        if (Date.now() > end) throw new Error('the rename process did not get to the 4th rename');
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  },
);
