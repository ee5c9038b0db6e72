import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { readdir, readlink } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { FlockHostLocks } from './flock-host-locks.js';

// A real disk, as a run directory would be (and not /tmp: tmpfs is fine for locks, but the
// scratch rule of this repository is /var/tmp).
const root = mkdtempSync(join('/var/tmp', 'archip-host-locks-'));
let n = 0;
/** A fresh lock directory (under a run directory that does not exist yet). */
const freshDir = () => join(root, `run${n++}`, 'host-locks');

const children = new Set<ChildProcess>();
afterEach(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  children.clear();
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

// The child processes run this module itself, bundled with esbuild from the TypeScript sources
// (workspace packages through their "source" condition, as vitest resolves them), so they test
// exactly this code. fastio finds its addon relative to its own module: `fastioAt` says where
// that module is taken to be (its package's src/, so the addon in its build/, as in the parent; or
// a directory without one).
const CHILD = join(root, 'child.mjs');
const CHILD_NO_ADDON = join(root, 'child-no-addon.mjs');
const FASTIO_SRC = join(
  dirname(createRequire(import.meta.url).resolve('@archipelago/fastio/package.json')),
  'src',
  'index.ts',
);
const CHILD_MAIN = `
  import { FlockHostLocks } from './flock-host-locks.ts';
  const [dir, name, wait, timeoutMs, holdMs] = process.argv.slice(2);
  const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
  const locks = new FlockHostLocks(dir);
  process.stdin.once('data', async () => {
    const t0 = performance.now();
    try {
      const h = await locks.acquire(name, { wait: wait === '1', timeoutMs: Number(timeoutMs) });
      say({ event: 'locked', pid: process.pid, at: Date.now() });
      if (Number(holdMs) < 0) return setInterval(() => {}, 1000); // until killed
      await new Promise((r) => setTimeout(r, Number(holdMs)));
      const at = Date.now();
      await h.release();
      say({ event: 'released', at });
      process.exit(0);
    } catch (e) {
      say({ event: 'failed', code: e.code, message: e.message, details: e.details, after: performance.now() - t0 });
      process.exit(1);
    }
  });
  say({ event: 'ready' });
`;

async function bundleChild(outfile: string, fastioAt: string): Promise<void> {
  await build({
    stdin: { resolveDir: fileURLToPath(new URL('.', import.meta.url)), loader: 'ts', contents: CHILD_MAIN },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    conditions: ['source'],
    outfile,
    logLevel: 'silent',
    plugins: [
      {
        name: 'fastio-addon-path',
        setup(b) {
          b.onLoad({ filter: /fastio[\\/]src[\\/]index\.ts$/ }, (a) => ({
            contents: readFileSync(a.path, 'utf8').replaceAll(
              'import.meta.url',
              JSON.stringify(pathToFileURL(fastioAt).href),
            ),
            loader: 'ts',
          }));
        },
      },
    ],
  });
}

beforeAll(async () => {
  await bundleChild(CHILD, FASTIO_SRC);
  await bundleChild(CHILD_NO_ADDON, join(root, 'no-addon', 'src', 'index.ts'));
});

interface Said {
  event: 'ready' | 'locked' | 'released' | 'failed';
  pid?: number;
  at?: number;
  code?: string;
  message?: string;
  details?: { volume: string; pid: number | null; lock: string };
  after?: number;
}

/** A node process that acquires `name` when told to (`go`), holds it `holdMs` (< 0: until killed). */
async function holderProcess(
  dir: string,
  name: string,
  o: { wait: boolean; timeoutMs: number; holdMs: number },
  script = CHILD,
) {
  const child = spawn(
    process.execPath,
    [script, dir, name, o.wait ? '1' : '0', String(o.timeoutMs), String(o.holdMs)],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  children.add(child);
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const said: Said[] = [];
  const waiters: (() => void)[] = [];
  lines.on('line', (l) => {
    said.push(JSON.parse(l) as Said);
    for (const w of waiters.splice(0)) w();
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  /** The first message of `event` (or the failure, if it comes instead). */
  const next = (event: Said['event']): Promise<Said> =>
    new Promise((resolve, reject) => {
      const look = () => {
        const m = said.find((s) => s.event === event || s.event === 'failed');
        if (m) resolve(m);
        else waiters.push(look);
      };
      look();
      void exited.then(() => setImmediate(() => reject(new Error(`child exited: ${JSON.stringify(said)}`))));
    });
  await next('ready');
  return {
    pid: child.pid as number,
    go: () => child.stdin?.write('go\n'),
    next,
    said,
    exited,
    kill9: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

const mode = (p: string) => statSync(p).mode & 0o7777;

describe('FlockHostLocks in one process', () => {
  it('creates the directory 0770 and the lock file 0660, writes its pid, clears it on release', async () => {
    const dir = freshDir();
    const locks = new FlockHostLocks(dir);
    const h = await locks.acquire('vol1', { wait: false, timeoutMs: 0 });
    expect(h.name).toBe('vol1');
    expect(mode(dir)).toBe(0o770);
    expect(mode(join(dir, 'vol1'))).toBe(0o660);
    expect(readFileSync(join(dir, 'vol1'), 'utf8')).toBe(`${process.pid}\n`);
    expect(await locks.holder('vol1')).toBe(process.pid);
    await h.release();
    expect(readFileSync(join(dir, 'vol1'), 'utf8')).toBe('');
    expect(await locks.holder('vol1')).toBeNull();
    await h.release(); // a second release does nothing
    // The file stays (removing it could let two processes lock two files of one name).
    expect(existsSync(join(dir, 'vol1'))).toBe(true);
  });

  it('refuses a second acquire of a held name in the same process, naming this process', async () => {
    const dir = freshDir();
    const locks = new FlockHostLocks(dir);
    const other = new FlockHostLocks(dir); // a second instance: the same lock
    const h = await locks.acquire('v', { wait: false, timeoutMs: 0 });
    for (const l of [locks, other])
      await expect(l.acquire('v', { wait: false, timeoutMs: 0 })).rejects.toMatchObject({
        code: 'EBUSY',
        message: `volume "v" is busy: this process (pid ${process.pid}) is already changing or holding it; retry, or wait for it (vlmc showmapped lists mapped volumes)`,
        details: { volume: 'v', pid: process.pid, lock: join(dir, 'v') },
      });
    // Another name is another lock.
    const w = await locks.acquire('w', { wait: false, timeoutMs: 0 });
    // A waiting acquire gets it once the first is released.
    const waiting = other.acquire('v', { wait: true, timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 100));
    const released = performance.now();
    await h.release();
    const h2 = await waiting;
    expect(performance.now() - released).toBeLessThan(500); // the poll's pause is at most 50 ms
    expect(await locks.holder('v')).toBe(process.pid);
    await h2.release();
    await w.release();
    expect(await locks.holder('v')).toBeNull();
  });

  it('gives up after timeoutMs with EBUSY, and at once without wait', async () => {
    const locks = new FlockHostLocks(freshDir());
    const h = await locks.acquire('t', { wait: false, timeoutMs: 0 });
    let t0 = performance.now();
    await expect(locks.acquire('t', { wait: true, timeoutMs: 400 })).rejects.toMatchObject({ code: 'EBUSY' });
    const waited = performance.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(395);
    expect(waited).toBeLessThan(400 + 1000);
    t0 = performance.now();
    await expect(locks.acquire('t', { wait: false, timeoutMs: 60_000 })).rejects.toMatchObject({
      code: 'EBUSY',
    });
    expect(performance.now() - t0).toBeLessThan(250);
    await h.release();
  });

  it('keeps the lock file out of child processes (O_CLOEXEC): they never hold a lock', async () => {
    const dir = freshDir();
    const locks = new FlockHostLocks(dir);
    const h = await locks.acquire('cx', { wait: false, timeoutMs: 0 });
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    children.add(child);
    await new Promise((r) => child.once('spawn', r));
    const proc = `/proc/${child.pid}/fd`;
    const fds = await Promise.all(
      (await readdir(proc)).map((fd) => readlink(join(proc, fd)).catch(() => '')),
    );
    expect(fds).toContain('/dev/null'); // its stdio: the listing works
    expect(fds).not.toContain(join(dir, 'cx'));
    await h.release();
    expect(await locks.holder('cx')).toBeNull();
  });

  it('answers null for a volume never locked, without creating anything', async () => {
    const dir = freshDir();
    const locks = new FlockHostLocks(dir);
    expect(await locks.holder('never')).toBeNull();
    expect(existsSync(dir)).toBe(false);
  });

  it('ignores a stale pid in an unlocked file, and overwrites it', async () => {
    const dir = freshDir();
    const locks = new FlockHostLocks(dir);
    await (await locks.acquire('s', { wait: false, timeoutMs: 0 })).release(); // creates the file
    writeFileSync(join(dir, 's'), '4194303999\nleft over\n');
    expect(await locks.holder('s')).toBeNull();
    const h = await locks.acquire('s', { wait: false, timeoutMs: 0 });
    expect(readFileSync(join(dir, 's'), 'utf8')).toBe(`${process.pid}\n`);
    await h.release();
  });

  it('refuses names that are not volume names, and a negative timeout', async () => {
    const locks = new FlockHostLocks(freshDir());
    for (const bad of ['', '.', '..', 'a/b', '../x', 'x'.repeat(124), 'a b'])
      await expect(locks.acquire(bad, { wait: false, timeoutMs: 0 })).rejects.toMatchObject({
        code: 'EINVAL_NAME',
      });
    await expect(locks.holder('a/b')).rejects.toMatchObject({ code: 'EINVAL_NAME' });
    await expect(locks.acquire('ok', { wait: true, timeoutMs: -1 })).rejects.toThrow(RangeError);
  });
});

describe('FlockHostLocks between processes', () => {
  it('lets exactly one of two racing processes win; the other fails with EBUSY naming the winner', async () => {
    const dir = freshDir();
    const o = { wait: true, timeoutMs: 300, holdMs: -1 };
    const a = await holderProcess(dir, 'race', o);
    const b = await holderProcess(dir, 'race', o);
    a.go();
    b.go();
    const [ra, rb] = await Promise.all([a.next('locked'), b.next('locked')]);
    const won = [ra, rb].filter((r) => r.event === 'locked');
    const lost = [ra, rb].filter((r) => r.event === 'failed');
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    const winner = won[0]?.pid as number;
    expect(lost[0]).toMatchObject({
      code: 'EBUSY',
      message: expect.stringContaining(
        `volume "race" is busy: another process of this host (pid ${winner}) is changing or holding it`,
      ),
      details: { volume: 'race', pid: winner },
    });
    expect(lost[0]?.after).toBeGreaterThanOrEqual(295);
    expect(await new FlockHostLocks(dir).holder('race')).toBe(winner);
    expect(readFileSync(join(dir, 'race'), 'utf8')).toBe(`${winner}\n`);
  });

  it('serializes two waiting processes: the second holds it only after the first released it', async () => {
    const dir = freshDir();
    const o = { wait: true, timeoutMs: 20_000, holdMs: 300 };
    const a = await holderProcess(dir, 'serial', o);
    const b = await holderProcess(dir, 'serial', o);
    a.go();
    b.go();
    const [ea, eb] = await Promise.all([a.exited, b.exited]);
    expect([ea, eb]).toEqual([0, 0]);
    const spans = [a.said, b.said]
      .map((s) => ({
        from: s.find((m) => m.event === 'locked')?.at as number,
        to: s.find((m) => m.event === 'released')?.at as number,
      }))
      .sort((x, y) => x.from - y.from);
    expect(spans[1]?.from).toBeGreaterThanOrEqual(spans[0]?.to as number);
  });

  it('frees the lock at once when its holder is killed with SIGKILL', async () => {
    const dir = freshDir();
    const locks = new FlockHostLocks(dir);
    const a = await holderProcess(dir, 'k9', { wait: false, timeoutMs: 0, holdMs: -1 });
    a.go();
    expect(await a.next('locked')).toMatchObject({ event: 'locked', pid: a.pid });
    expect(await locks.holder('k9')).toBe(a.pid);
    await expect(locks.acquire('k9', { wait: false, timeoutMs: 0 })).rejects.toMatchObject({
      code: 'EBUSY',
      details: { pid: a.pid },
    });
    await a.kill9();
    // Its pid is still in the file (it could not clear it): it means nothing now.
    expect(readFileSync(join(dir, 'k9'), 'utf8')).toBe(`${a.pid}\n`);
    expect(await locks.holder('k9')).toBeNull();
    const h = await locks.acquire('k9', { wait: false, timeoutMs: 0 });
    expect(await locks.holder('k9')).toBe(process.pid);
    await h.release();
  });

  it('honours the timeout of a process waiting for another', async () => {
    const dir = freshDir();
    const locks = new FlockHostLocks(dir);
    const h = await locks.acquire('to', { wait: false, timeoutMs: 0 });
    const b = await holderProcess(dir, 'to', { wait: true, timeoutMs: 500, holdMs: 0 });
    b.go();
    const r = await b.next('locked');
    expect(r).toMatchObject({ event: 'failed', code: 'EBUSY', details: { pid: process.pid } });
    expect(r.after).toBeGreaterThanOrEqual(495);
    expect(r.after).toBeLessThan(500 + 1000);
    await h.release();
  });

  it.runIf(spawnSync('flock', ['--version']).status === 0)(
    'names a holder that wrote no pid (flock(1)) from /proc/locks',
    async () => {
      const dir = freshDir();
      const locks = new FlockHostLocks(dir);
      await (await locks.acquire('ext', { wait: false, timeoutMs: 0 })).release();
      // In its own process group: flock(1) runs sleep as its child, and both go at the end.
      const f = spawn('flock', ['-x', join(dir, 'ext'), 'sleep', '30'], { stdio: 'ignore', detached: true });
      onTestFinished(() => process.kill(-(f.pid as number), 'SIGKILL'));
      const until = performance.now() + 5000;
      while ((await locks.holder('ext')) === null && performance.now() < until)
        await new Promise((r) => setTimeout(r, 10));
      expect(await locks.holder('ext')).toBe(f.pid);
      await expect(locks.acquire('ext', { wait: false, timeoutMs: 0 })).rejects.toMatchObject({
        code: 'EBUSY',
        details: { pid: f.pid },
      });
    },
  );
});

describe('FlockHostLocks without the fastio addon', () => {
  it('fails with ENOTSUP saying how to get it: there is no lock without it', async () => {
    const dir = freshDir();
    const a = await holderProcess(dir, 'na', { wait: true, timeoutMs: 1000, holdMs: 0 }, CHILD_NO_ADDON);
    a.go();
    expect(await a.next('locked')).toMatchObject({
      event: 'failed',
      code: 'ENOTSUP',
      message: 'same-host locking needs the @archipelago/fastio addon: rebuild it (pnpm run build)',
    });
    expect(existsSync(dir)).toBe(false);
  });
});
