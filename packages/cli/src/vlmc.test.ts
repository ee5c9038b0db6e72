/**
 * `vlmc` as a user runs it: the built CLI (packages/cli/bin/vlmc.js over dist/) spawned with a
 * temporary configuration whose blockers live in temporary directories.
 *
 * Build first: `npx tsc --build packages/cli` (or `pnpm build`).
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileBlocker } from '@archipelago/blocker-file';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testConf } from './__fixtures__/conf.js';

const PKG = dirname(dirname(fileURLToPath(import.meta.url)));
const BIN = join(PKG, 'bin', 'vlmc.js');
const DIST = join(PKG, 'dist', 'commands', 'create.js');
const MiB = 1024 * 1024;
const BS = 4 * MiB;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

let dir: string;
/** Host A's configuration (ARCHIPELAGO_CONF by default). */
let confA: string;
/** Host B: the same storage, another lock identity. */
let confB: string;
let env: NodeJS.ProcessEnv;

function vlmc(args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: { ...env, ...extraEnv }, maxBuffer: 16 * MiB },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Runs a command that must succeed with --json and returns the parsed output. */
async function json<T = Record<string, unknown>>(
  args: string[],
  extraEnv: NodeJS.ProcessEnv = {},
): Promise<T> {
  const r = await vlmc([...args, '--json'], extraEnv);
  if (r.code !== 0) throw new Error(`vlmc ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout) as T;
}

/** Runs a command that must fail: exactly one line `vlmc: CODE: message` and exit status 1. */
async function fails(args: string[], code: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<string> {
  const r = await vlmc(args, extraEnv);
  expect(r.code, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(1);
  expect(r.stdout).toBe('');
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^vlmc: ${code}: \\S`));
  return lines[0]!;
}

const conf = testConf;

/** Every test spawns vlmc many times (about half a second each, more on a loaded machine). */
const SLOW = { timeout: 300_000 };

const sha256 = async (p: string) =>
  createHash('sha256')
    .update(await readFile(p))
    .digest('hex');

beforeAll(async () => {
  if (!existsSync(DIST)) {
    throw new Error(`the CLI is not built (${DIST} is missing): run "npx tsc --build packages/cli" first`);
  }
  dir = await mkdtemp(join(tmpdir(), 'vlmc-cli-'));
  confA = join(dir, 'a.conf');
  confB = join(dir, 'b.conf');
  await writeFile(confA, conf(join(dir, 'data'), 'hostA'));
  await writeFile(confB, conf(join(dir, 'data'), 'hostB'));
  env = { ...process.env, ARCHIPELAGO_CONF: confA, XDG_DATA_HOME: join(dir, 'xdg'), NO_COLOR: '1' };
  delete env.VLMC_DEBUG;
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe.concurrent('volume life cycle', SLOW, () => {
  it('create, info, list, snapshot, clone, resize, rename, remove', async () => {
    const created = await json(['create', 'life01', '--size', '10']);
    expect(created).toMatchObject({
      name: 'life01',
      size: 10 * MiB,
      blocksize: BS,
      epoch: 1,
      readonly: false,
      objects: 3,
      allocated: 0,
      lockOwner: null,
    });

    const info = await json(['info', 'life01']);
    expect(info).toMatchObject({ name: 'life01', size: 10 * MiB, readonly: false, lockOwner: null });

    const human = await vlmc(['info', 'life01']);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^size: +10 MiB \(10485760 bytes\)$/m);
    expect(human.stdout).toMatch(/^lock owner: +\(none\)$/m);

    const snap = await json(['snapshot', 'life01', 'life01-snap']);
    expect(snap).toMatchObject({ name: 'life01-snap', readonly: true, size: 10 * MiB });
    expect(await json(['info', 'life01'])).toMatchObject({ epoch: 2 });

    const clone = await json(['create', 'life02', '--snap', 'life01-snap']);
    expect(clone).toMatchObject({ name: 'life02', size: 10 * MiB, readonly: false, lockOwner: null });
    const bigger = await json(['create', 'life03', '--snap', 'life01-snap', '-s', '1G']);
    expect(bigger).toMatchObject({ size: 1024 * MiB, objects: 256 });

    const listed = await vlmc(['list']);
    expect(listed.stdout.split('\n').filter(Boolean)).toEqual(
      expect.arrayContaining(['life01', 'life01-snap (snapshot)', 'life02', 'life03']),
    );
    const records = await json<Array<{ name: string; readonly: boolean }>>(['ls']);
    expect(records.find((r) => r.name === 'life01-snap')?.readonly).toBe(true);

    expect(await json(['resize', 'life02', '--size', '20M'])).toMatchObject({ size: 20 * MiB, objects: 5 });
    expect(await json(['info', 'life02'])).toMatchObject({ size: 20 * MiB, lockOwner: null });

    expect(await json(['rename', 'life02', 'life02-renamed'])).toMatchObject({ name: 'life02-renamed' });
    await fails(['info', 'life02'], 'ENOENT_VOLUME');

    expect(await json(['remove', 'life02-renamed'])).toEqual({ name: 'life02-renamed', removed: true });
    expect((await vlmc(['rm', 'life03'])).code).toBe(0);
    const names = (await json<Array<{ name: string }>>(['list'])).map((r) => r.name);
    expect(names).not.toContain('life02-renamed');
    expect(names).not.toContain('life03');
    expect(names).toContain('life01');
  });

  it('parses sizes: a bare number is MiB, suffixes are binary, bad ones fail with EINVAL_SIZE', async () => {
    expect(await json(['create', 'size01', '--size', '10'])).toMatchObject({ size: 10 * MiB });
    expect(await json(['create', 'size02', '-s', '1G'])).toMatchObject({ size: 1024 * MiB });
    expect(await json(['create', 'size03', '-s', '4096B'])).toMatchObject({ size: 4096, objects: 1 });
    const line = await fails(['create', 'size04', '--size', '1X'], 'EINVAL_SIZE');
    expect(line).toContain('"1X"');
    await fails(['create', 'size05'], 'EINVAL_SIZE');
    await fails(['resize', 'size01', '-s', '0'], 'EINVAL_SIZE');
  });

  it('reports errors as one line with a stable code and exit status 1', async () => {
    await fails(['info', 'no-such-volume'], 'ENOENT_VOLUME');
    await json(['create', 'dup001', '-s', '1']);
    await fails(['create', 'dup001', '-s', '1'], 'EEXIST_VOLUME');
    await fails(['create', 'bad/name', '-s', '1'], 'EINVAL_NAME');
    await fails(['create', 'x_lock', '-s', '1'], 'EINVAL_NAME');
    await fails(['create', 'dup002', '--snap', 'dup001'], 'ENOTSNAPSHOT');
    await fails(['snapshot', 'no-such-volume', 'snap'], 'ENOENT_VOLUME');
    await fails(['info'], 'EINVAL'); // missing argument
    await fails(['create', 'v', '--bogus'], 'EINVAL'); // unknown flag
    await fails(['frobnicate'], 'EINVAL'); // unknown command
    await fails(['import', join(dir, 'no-such-file'), 'imp000'], 'EINVAL');
  });

  it('with --json, prints {"error":{code,message,details}} on stdout', async () => {
    const r = await vlmc(['info', 'no-such-volume', '--json']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    expect(out.error.code).toBe('ENOENT_VOLUME');
    expect(out.error.message).toContain('no-such-volume');
    expect(out.error.details).toMatchObject({ volume: 'no-such-volume' });
  });
});

describe('process', SLOW, () => {
  it("runs with libuv's thread pool at 16 threads (the bin sets it before anything uses the pool)", async () => {
    // The pool starts all its threads at its first use; an import uses it at once. Count the
    // process's threads while it runs: 16 workers plus the main and V8's threads.
    const src = join(dir, 'pool.img');
    await writeFile(src, randomBytes(16 * MiB));
    const child = execFile(process.execPath, [BIN, 'import', src, 'pool001', '--json'], { env });
    const exited = new Promise<number>((r) => child.on('exit', (c) => r(c ?? 1)));
    let most = 0;
    let running = true;
    void exited.then(() => {
      running = false;
    });
    while (running) {
      try {
        most = Math.max(most, readdirSync(`/proc/${child.pid}/task`).length);
      } catch {
        // exited between the check and the read
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    expect(await exited).toBe(0);
    expect(most).toBeGreaterThanOrEqual(17);
  });
});

describe.concurrent('import and export', SLOW, () => {
  it('round-trips an image with data and zero regions, sparse on both sides', async () => {
    // 9 whole blocks and a partial one: data, zero, data, data, zero, zero, one non-zero byte, data, zero, tail.
    const layout = ['data', 'zero', 'data', 'data', 'zero', 'zero', 'byte', 'data', 'zero'] as const;
    const parts = layout.map((k) => {
      if (k === 'data') return randomBytes(BS);
      const b = Buffer.alloc(BS);
      if (k === 'byte') b[BS - 1] = 7;
      return b;
    });
    parts.push(randomBytes(123_457));
    const image = Buffer.concat(parts);
    const src = join(dir, 'disk.img');
    await writeFile(src, image);
    const nonZero = layout.filter((k) => k !== 'zero').length + 1;

    const imp = await json(['import', src, 'img001']);
    expect(imp).toMatchObject({
      volume: 'img001',
      bytes: image.length,
      blocks: 10,
      written: nonZero,
      zeroSkipped: 10 - nonZero,
    });
    expect(typeof imp.seconds).toBe('number');
    expect(typeof imp.mibPerSec).toBe('number');
    const info = await json(['info', 'img001']);
    expect(info).toMatchObject({ size: image.length, objects: 10, allocated: nonZero, lockOwner: null });

    const human = await vlmc(['import', src, 'img002']);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain(`${nonZero} blocks written, ${10 - nonZero} zero blocks skipped`);
    expect(human.stderr).toBe(''); // no progress bar: stderr is not a terminal

    await fails(['import', src, 'img001'], 'EEXIST_VOLUME');

    const out = join(dir, 'disk.out');
    await writeFile(out, 'old content that must go');
    const exp = await json(['export', 'img001', out]);
    expect(exp).toMatchObject({
      volume: 'img001',
      bytes: image.length,
      written: nonZero,
      zeroSkipped: 10 - nonZero,
    });
    expect(await sha256(out)).toBe(createHash('sha256').update(image).digest('hex'));
    const st = await stat(out);
    expect(st.size).toBe(image.length);
    expect(st.blocks * 512).toBeLessThan(st.size); // holes where the zero blocks are
    expect(st.blocks * 512).toBeLessThanOrEqual(nonZero * BS + 64 * 1024);
    expect(await json(['info', 'img001'])).toMatchObject({ lockOwner: null });

    // Snapshot and clone export the same bytes.
    await json(['snapshot', 'img001', 'img001-s1']);
    await json(['create', 'img003', '--snap', 'img001-s1']);
    for (const name of ['img001-s1', 'img003']) {
      const p = join(dir, `${name}.out`);
      await json(['export', name, p]);
      expect(await sha256(p)).toBe(createHash('sha256').update(image).digest('hex'));
    }
  });

  it('exports a thin volume as one big hole', async () => {
    await json(['create', 'thin01', '-s', '1G']);
    const p = join(dir, 'thin.out');
    expect(await json(['export', 'thin01', p])).toMatchObject({ written: 0, zeroSkipped: 256 });
    const st = await stat(p);
    expect(st.size).toBe(1024 * MiB);
    expect(st.blocks).toBe(0);
  });
});

describe.concurrent('trash', SLOW, () => {
  it('remove puts a volume in the trash; trash ls shows it; trash restore brings it back, not over a reused name', async () => {
    const image = Buffer.concat([randomBytes(BS), Buffer.alloc(BS), randomBytes(MiB)]);
    const src = join(dir, 'trash.img');
    await writeFile(src, image);
    const digest = createHash('sha256').update(image).digest('hex');
    await json(['import', src, 'tr01']);
    await json(['snapshot', 'tr01', 'tr01-s']);
    const t0 = Date.now();
    expect(await json(['rm', 'tr01'])).toEqual({ name: 'tr01', removed: true });
    await json(['rm', 'tr01-s']);
    await fails(['info', 'tr01'], 'ENOENT_VOLUME');

    type Rec = {
      name: string;
      kind: string;
      size: number;
      removedAt: string;
      expiresAt: string;
      entry: string;
    };
    const mine = async () => (await json<Rec[]>(['trash', 'ls'])).filter((r) => r.name.startsWith('tr01'));
    const trash = await mine();
    expect(trash.map((r) => [r.name, r.kind, r.size])).toEqual([
      ['tr01', 'volume', image.length],
      ['tr01-s', 'snapshot', image.length],
    ]);
    const removedAt = Date.parse(trash[0]!.removedAt);
    expect(removedAt).toBeGreaterThanOrEqual(t0 - 1000);
    expect(removedAt).toBeLessThanOrEqual(Date.now());
    expect(trash[0]!.expiresAt).toBe(trash[0]!.removedAt); // trash_ttl 0: the next gc
    const human = await vlmc(['trash', 'ls']);
    expect(human.stdout).toMatch(/^NAME +KIND +SIZE +REMOVED +EXPIRES$/m);
    expect(human.stdout).toMatch(/^tr01-s +snapshot +9 MiB +\d{4}-\d\d-\d\dT/m);

    // The name is free again; while it is used, restoring is refused and changes nothing.
    await json(['create', 'tr01', '--size', '1']);
    const refused = await fails(['trash', 'restore', 'tr01'], 'EEXIST_VOLUME');
    expect(refused).toContain('cannot restore "tr01" from the trash: the name was used again');
    expect(await json(['info', 'tr01'])).toMatchObject({ size: MiB });
    await json(['rm', 'tr01']);

    // The first removal, by its entry: the bytes are the imported image's.
    const restored = await json(['trash', 'restore', 'tr01', '--entry', trash[0]!.entry]);
    expect(restored).toMatchObject({ name: 'tr01', size: image.length, readonly: false, lockOwner: null });
    const out = join(dir, 'trash.out');
    await json(['export', 'tr01', out]);
    expect(await sha256(out)).toBe(digest);
    expect((await vlmc(['trash', 'restore', 'tr01-s'])).stdout).toBe('restored tr01-s (snapshot)\n');
    // Left in the trash: the second tr01 (1 MiB); `ls` shows no trash entry.
    expect((await mine()).map((r) => [r.name, r.size])).toEqual([['tr01', MiB]]);
    const listed = (await json<Array<{ name: string }>>(['ls'])).map((r) => r.name);
    expect(listed).toEqual(expect.arrayContaining(['tr01', 'tr01-s']));
    expect(listed.some((n) => n.includes('trash'))).toBe(false);
  });
});

describe.concurrent('locks', SLOW, () => {
  it('lock, unlock and unlock -f between two hosts; ELOCKED names the owner', async () => {
    const B = ['-c', confB];
    await json(['create', 'lock01', '-s', '8']);
    expect(await json(['lock', 'lock01'])).toEqual({
      name: 'lock01',
      owner: expect.stringMatching(/_hostA$/),
    });
    expect((await json(['lock', 'lock01'])).owner).toMatch(/_hostA$/); // idempotent for the owner
    const owner = (await json<{ lockOwner: string }>(['info', 'lock01'])).lockOwner;
    expect(owner).toMatch(/_hostA$/);

    // The lock file holds the owner's identity: `cat <lockdir>/<volume>_lock`.
    const lockFile = FileBlocker.objectPath(join(dir, 'data', 'maps'), 'lock01_lock');
    expect((await readFile(lockFile, 'utf8')).trim()).toBe(owner);

    expect(await fails([...B, 'lock', 'lock01'], 'ELOCKED')).toContain(owner);
    expect(await fails([...B, 'unlock', 'lock01'], 'ELOCKED')).toContain(owner);
    expect(await fails([...B, 'snapshot', 'lock01', 'lock01-s'], 'ELOCKED')).toContain(owner);
    await fails([...B, 'resize', 'lock01', '-s', '16'], 'ELOCKED');
    await fails([...B, 'open', 'lock01'], 'ELOCKED');

    // The owner's own map changes leave its lock in place.
    await json(['snapshot', 'lock01', 'lock01-s']);
    expect(await json(['info', 'lock01'])).toMatchObject({ lockOwner: owner });

    // Host B breaks the stale lock, then takes it.
    expect(await json([...B, 'unlock', '-f', 'lock01'])).toMatchObject({
      unlocked: true,
      previousOwner: owner,
    });
    expect(existsSync(lockFile)).toBe(false);
    await json([...B, 'lock', 'lock01']);
    const ownerB = (await json<{ lockOwner: string }>(['info', 'lock01'])).lockOwner;
    expect(ownerB).toMatch(/_hostB$/);
    expect((await readFile(lockFile, 'utf8')).trim()).toBe(ownerB);
    expect(await fails(['unlock', 'lock01'], 'ELOCKED')).toContain(ownerB);
    await json([...B, 'unlock', 'lock01']);
    expect(await json(['info', 'lock01'])).toMatchObject({ lockOwner: null });
    await fails(['unlock', 'lock01'], 'ENOTLOCKED');
  });

  it('accepts the global -c before the command, as the original did', async () => {
    const r = await vlmc(['-c', confB, 'lock', 'lock02']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/_hostB/);
    expect((await json(['-c', confB, 'unlock', 'lock02'])).unlocked).toBe(true);
  });
});

describe.concurrent('open and close', SLOW, () => {
  it('open holds the lock across commands; close releases it', async () => {
    await json(['create', 'open01', '-s', '12']);
    const opened = await json(['open', 'open01']);
    expect(opened).toMatchObject({ name: 'open01', lockOwner: expect.stringMatching(/_hostA$/) });
    await json(['open', 'open01']); // idempotent on this host
    expect(await fails(['-c', confB, 'open', 'open01'], 'ELOCKED')).toMatch(/_hostA/);

    // Commands on an open volume keep it open.
    await json(['snapshot', 'open01', 'open01-s']);
    await json(['resize', 'open01', '-s', '16']);
    await json(['export', 'open01', join(dir, 'open01.out')]);
    expect(await json(['info', 'open01'])).toMatchObject({
      size: 16 * MiB,
      lockOwner: expect.stringMatching(/_hostA$/),
    });

    // Another host can still read it (served from an uncached map, without the lock).
    await json(['-c', confB, 'export', 'open01', join(dir, 'open01-b.out')]);
    expect(await json(['info', 'open01'])).toMatchObject({ lockOwner: expect.stringMatching(/_hostA$/) });

    await fails(['-c', confB, 'close', 'open01'], 'ELOCKED');
    expect(await json(['close', 'open01'])).toEqual({ name: 'open01', closed: true });
    expect(await json(['info', 'open01'])).toMatchObject({ lockOwner: null });
    await json(['close', 'open01']); // closing a closed volume is fine
  });

  it('commands that change a map do not leave the volume locked', async () => {
    await json(['create', 'open02', '-s', '8']);
    await json(['snapshot', 'open02', 'open02-s']);
    await json(['resize', 'open02', '-s', '12']);
    await json(['export', 'open02', join(dir, 'open02.out')]);
    for (const name of ['open02', 'open02-s'])
      expect(await json(['info', name])).toMatchObject({ lockOwner: null });
    // So host B can change it right away.
    await json(['-c', confB, 'snapshot', 'open02', 'open02-s2']);
  });
});

describe.concurrent('configuration', SLOW, () => {
  it('a malformed configuration fails with EINVAL_CONFIG naming the file and the key', async () => {
    const bad = join(dir, 'bad.conf');
    await writeFile(
      bad,
      conf(join(dir, 'data'), 'hostA').replace('unique_str = hostA', 'unique_str = hostA\nnr_ops = 100'),
    );
    const line = await fails(['list', '-c', bad], 'EINVAL_CONFIG');
    expect(line).toContain(bad);
    expect(line).toContain('blockerb.nr_ops must be a power of two');

    await writeFile(
      bad,
      conf(join(dir, 'data'), 'hostA').replace('[mapperd]', '[mapperd]\nportno_start = 1000'),
    );
    expect(await fails(['list'], 'EINVAL_CONFIG', { ARCHIPELAGO_CONF: bad })).toContain(
      'mapperd.portno_start',
    );

    await fails(['list', '-c', join(dir, 'missing.conf')], 'EINVAL_CONFIG');
  });

  it('a RADOS blocker without a reachable ceph.conf fails with a clear one-line error', async () => {
    const rados = join(dir, 'rados.conf');
    await writeFile(
      rados,
      conf(join(dir, 'data'), 'hostA').replace(
        `type = file_blocker\narchip_dir = ${join(dir, 'data', 'blocks')}`,
        `type = rados_blocker\npool = blocks\nceph_conf = ${join(dir, 'no-such-ceph.conf')}\nconnect_timeout = 3`,
      ),
    );
    expect(await fails(['list', '-c', rados], 'EINVAL_CONFIG')).toContain('no-such-ceph.conf');
  });

  it('-c beats ARCHIPELAGO_CONF', async () => {
    const other = join(dir, 'other.conf');
    await writeFile(other, conf(join(dir, 'other-data'), 'hostA'));
    await json(['create', 'where01', '-s', '4', '-c', other]);
    const viaFlag = (await json<Array<{ name: string }>>(['list', '-c', other])).map((r) => r.name);
    expect(viaFlag).toEqual(['where01']);
    const viaEnv = (await json<Array<{ name: string }>>(['list'])).map((r) => r.name);
    expect(viaEnv).not.toContain('where01');
    const viaEnvOther = (await json<Array<{ name: string }>>(['list'], { ARCHIPELAGO_CONF: other })).map(
      (r) => r.name,
    );
    expect(viaEnvOther).toEqual(['where01']);
  });

  it.skipIf(existsSync('/etc/archipelago/archipelago.conf'))(
    'creates the embedded default under XDG_DATA_HOME when nothing names a file',
    async () => {
      const xdg = join(dir, 'xdg-default');
      const e = { ...env, XDG_DATA_HOME: xdg };
      delete e.ARCHIPELAGO_CONF;
      const r = await new Promise<Result>((resolve) => {
        execFile(
          process.execPath,
          [BIN, 'create', 'embed01', '-s', '4', '--json'],
          { env: e },
          (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr }),
        );
      });
      expect(r.code, r.stderr).toBe(0);
      const text = await readFile(join(xdg, 'archipelago', 'archipelago.conf'), 'utf8');
      expect(text).toContain(`archip_dir = ${join(xdg, 'archipelago', 'blocks')}`);
      expect(text).toContain(`archip_dir = ${join(xdg, 'archipelago', 'maps')}`);
      expect(existsSync(join(xdg, 'archipelago', 'maps'))).toBe(true);
    },
  );
});
