/**
 * The tools as the administrator's guide writes them (issue 16), run as the built `vlmc`:
 * export to stdout and import from stdin through real pipes, snapshots marked in `ls` and a
 * clone's parent in `info`, Pithos v0 maps laid out as the original did, a map refused up front
 * when its storage has no room, exact sizes. Build first (`pnpm build`).
 */
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { merkleRoot } from '@archipelago/mapfile';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testConf } from './__fixtures__/conf.js';

const PKG = dirname(dirname(fileURLToPath(import.meta.url)));
const BIN = join(PKG, 'bin', 'vlmc.js');
const MiB = 1024 * 1024;
const BS = 4 * MiB;

let dir: string;
let env: NodeJS.ProcessEnv;
const VLMC = `${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)}`;

interface Result {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs a shell pipeline (`vlmc` stands for the built CLI); stdout as bytes. */
function sh(script: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(
      '/bin/bash',
      ['-c', `vlmc() { ${VLMC} "$@"; }\nset -o pipefail\n${script}`],
      { env: { ...env, ...extraEnv }, maxBuffer: 256 * MiB, encoding: 'buffer' },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr: stderr.toString() });
      },
    );
  });
}

async function json<T = Record<string, unknown>>(args: string): Promise<T> {
  const r = await sh(`vlmc ${args} --json`);
  if (r.code !== 0) throw new Error(`vlmc ${args} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout.toString()) as T;
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Where the file blocker keeps object `name` under `root` (reference §4.3): `<root>/h0h1/h2h3/h4h5/<name>`. */
function objectPath(root: string, name: string): string {
  const h = sha(Buffer.from(name));
  return join(root, h.slice(0, 2), h.slice(2, 4), h.slice(4, 6), name);
}

async function putObject(root: string, name: string, data: Uint8Array): Promise<void> {
  const p = objectPath(root, name);
  await mkdir(dirname(p), { recursive: true });
  await writeFile(p, data);
}

beforeAll(async () => {
  if (!existsSync(join(PKG, 'dist', 'bundle', 'vlmc.cjs')))
    throw new Error('the CLI is not built: run pnpm build');
  dir = await mkdtemp(join(tmpdir(), 'vlmc-tools-'));
  await writeFile(join(dir, 'a.conf'), testConf(join(dir, 'data'), 'hostA'));
  env = {
    ...process.env,
    ARCHIPELAGO_CONF: join(dir, 'a.conf'),
    XDG_DATA_HOME: join(dir, 'xdg'),
    NO_COLOR: '1',
  };
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/**
 * An image of three 4 MiB blocks: data ending in zeros, a whole zero block, and a partial last
 * block (the size is not a multiple of anything).
 */
function image(): Buffer {
  return Buffer.concat([randomBytes(BS - 100), Buffer.alloc(BS + 100), randomBytes(777_001)]);
}

describe.concurrent('vlmc as the guide and rbd users expect', { timeout: 120_000 }, () => {
  it('says once, on stderr, that a key set in the file has no effect here; --json stays clean', async () => {
    const conf = join(dir, 'noeffect.conf');
    const base = testConf(join(dir, 'noeffect'), 'hostN').replace(
      'BLKTAP_ENABLED = False',
      'BLKTAP_ENABLED = True',
    );
    await writeFile(conf, base.replace('[mapperd]', '[mapperd]\nthreshold = 100'));
    const r = await sh('vlmc ls --json', { ARCHIPELAGO_CONF: conf });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout.toString())).toEqual([]);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(
      /^vlmc: notice: \[ARCHIPELAGO\] BLKTAP_ENABLED: no effect here: there is no Xen blktap/,
    );
    expect(lines[1]).toMatch(/^vlmc: notice: \[mapperd\] threshold: no effect here/);
    // Nothing set that has no effect: nothing said.
    expect((await sh('vlmc ls --json')).stderr).toBe('');
  });

  it('import - reads stdin, export - writes only the volume to stdout (real pipes)', async () => {
    const img = image();
    const file = join(dir, 'pipe.raw');
    await writeFile(file, img);
    const imported = await sh(`cat ${file} | vlmc import - pipe1`);
    expect(imported.code, imported.stderr).toBe(0);
    expect(existsSync('-')).toBe(false);
    const out = await sh('vlmc export pipe1 -');
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout.length).toBe(img.length);
    expect(sha(out.stdout)).toBe(sha(img));
    expect(out.stderr).toBe(''); // not a terminal: no progress, no summary
    // volume to volume through a pipe, as `rbd export v - | rbd import - w`
    const piped = await sh('vlmc export pipe1 - | vlmc import - pipe2');
    expect(piped.code, piped.stderr).toBe(0);
    expect(await json('info pipe2')).toMatchObject({ size: img.length, incomplete: false });
    expect(sha((await sh('vlmc export pipe2 -')).stdout)).toBe(sha(img));
    // --size: the volume's size; a shorter input is zero-padded, a longer one refused (and removed)
    const sized = await sh(`head -c 1000 ${file} | vlmc import - pipe3 --size 1M`);
    expect(sized.code, sized.stderr).toBe(0);
    const back = (await sh('vlmc export pipe3 -')).stdout;
    expect(back.length).toBe(MiB);
    expect(back.subarray(0, 1000).equals(img.subarray(0, 1000))).toBe(true);
    expect(back.subarray(1000).equals(Buffer.alloc(MiB - 1000))).toBe(true);
    const long = await sh(`cat ${file} | vlmc import - pipe4 --size 1M`);
    expect(long.code).toBe(1);
    expect(long.stderr).toMatch(/EINVAL_SIZE: the input holds more than the 1048576 bytes of --size/);
    expect((await sh('vlmc info pipe4')).stderr).toMatch(/ENOENT_VOLUME/);
    expect((await sh('vlmc export pipe1 - --json')).stdout.toString()).toMatch(/"code": "EINVAL"/);
    expect((await sh('printf "" | vlmc import - pipe5')).stderr).toMatch(/EINVAL_SIZE: the input is empty/);
  });

  it('an import from stdin killed midway leaves the volume incomplete; remove removes it', async () => {
    const child = spawn(process.execPath, [BIN, 'import', '-', 'killed1'], {
      env,
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    child.stdin.on('error', () => {}); // EPIPE once it is killed
    child.stdin.write(randomBytes(2 * BS));
    let info: Record<string, unknown> | null = null;
    for (let i = 0; i < 100 && info === null; i++) {
      const r = await sh('vlmc info killed1 --json');
      if (r.code === 0) info = JSON.parse(r.stdout.toString());
      else await new Promise((r) => setTimeout(r, 100));
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(info).toMatchObject({ incomplete: true });
    expect(await json('info killed1')).toMatchObject({ incomplete: true });
    expect((await sh('vlmc ls')).stdout.toString()).toMatch(/^killed1 \(incomplete\)$/m);
    expect((await sh('vlmc create k2 --snap killed1')).stderr).toMatch(/EBUSY/);
    expect((await sh('vlmc remove killed1')).code).toBe(0);
  });

  it('ls marks snapshots; info names the parent snapshot of a clone and the origin of a snapshot', async () => {
    await json('create lin1 --size 12M');
    await sh(`head -c 5000000 /dev/urandom > ${join(dir, 'lin.raw')}`);
    await json(`import ${join(dir, 'lin.raw')} lin2`);
    await json('snapshot lin2 lin2-s1');
    await json('create lin3 --snap lin2-s1');
    const ls = (await sh('vlmc ls')).stdout.toString().split('\n');
    expect(ls).toContain('lin2-s1 (snapshot)');
    expect(ls).toContain('lin2');
    expect(ls).toContain('lin3');
    const records = await json<Array<{ name: string; snapshot: boolean }>>('ls');
    expect(records.find((r) => r.name === 'lin2-s1')?.snapshot).toBe(true);
    expect(records.find((r) => r.name === 'lin3')?.snapshot).toBe(false);
    expect(await json('info lin3')).toMatchObject({ parent: 'lin2-s1' });
    expect((await sh('vlmc info lin3')).stdout.toString()).toMatch(/^parent: +lin2-s1 \(snapshot\)$/m);
    expect(await json('info lin2-s1')).toMatchObject({ origin: 'lin2' });
    expect(await json('info lin2')).toMatchObject({ parent: null }); // its own data, not a clone
    expect(await json('info lin1')).toMatchObject({ parent: null });
  });

  it('a Pithos v0 map laid out as the original did: info, clone (as Ganeti create), export', async () => {
    // Pithos: blocks of 4 MiB named by the SHA-256 of the block without its trailing zeros (a zero
    // block is the hash of nothing, and is not stored); the map is the concatenated 32-byte
    // hashes, no header, named by the file's Merkle root; the size is not in it.
    const img = image();
    const blocks = [0, 1, 2].map((i) => img.subarray(i * BS, Math.min(img.length, (i + 1) * BS)));
    const strip = (b: Buffer) => {
      let end = b.length;
      while (end > 0 && b[end - 1] === 0) end--;
      return b.subarray(0, end);
    };
    const hashes = blocks.map((b) => sha(strip(b)));
    expect(hashes[1]).toBe(sha(Buffer.alloc(0)));
    for (const [i, b] of blocks.entries()) {
      if (i !== 1) await putObject(join(dir, 'data', 'blocks'), hashes[i]!, strip(b));
    }
    const root = merkleRoot(hashes);
    await putObject(join(dir, 'data', 'maps'), root, Buffer.concat(hashes.map((h) => Buffer.from(h, 'hex'))));
    const v0 = `--v0-size ${img.length}`;

    // Without the hint there is nothing to recognise it by (as in the original: no signature).
    expect((await sh(`vlmc info ${root}`)).code).toBe(1);
    expect(await json(`info ${root} ${v0}`)).toMatchObject({
      name: root,
      size: img.length,
      readonly: true,
      version: 0,
      objects: 3,
      allocated: 2,
    });
    expect(await json(`info ${root} --assume-v0`)).toMatchObject({ size: 3 * BS, version: 0 });
    expect(sha((await sh(`vlmc export ${root} - ${v0}`)).stdout)).toBe(sha(img));
    const out = join(dir, 'v0.raw');
    expect((await sh(`vlmc export ${root} ${out} ${v0}`)).code).toBe(0);
    expect(sha(await readFile(out))).toBe(sha(img));
    // Ganeti's create: vlmc create <vol> --snap <v0 map> --v0_size <size> (the original's spelling too)
    const made = await json(`create v0clone --snap ${root} --v0_size ${img.length}`);
    expect(made).toMatchObject({ name: 'v0clone', size: img.length, readonly: false, version: 2 });
    expect(sha((await sh('vlmc export v0clone -')).stdout)).toBe(sha(img));
    // the clone is a volume: writable; the v0 map is left as it was
    expect((await sh(`head -c 4096 /dev/zero | vlmc import - v0other`)).code).toBe(0);
    expect(await json(`info ${root} ${v0}`)).toMatchObject({ version: 0 });
    expect((await sh(`vlmc info ${root} --v0-size ${img.length + BS}`)).stderr).toMatch(/ECORRUPT_MAP/);
  });

  it('create prints exact sizes; refuses a map its storage has no room for, before writing', async () => {
    expect((await sh('vlmc create odd1 --size 4097B')).stdout.toString()).toBe(
      'created volume odd1 (4097 B, about 4 KiB)\n',
    );
    expect((await sh('vlmc create even1 --size 4K')).stdout.toString()).toBe(
      'created volume even1 (4 KiB)\n',
    );
    // A maps directory on a 1 MiB tmpfs (root only; skipped otherwise).
    const small = join(dir, 'small');
    await mkdir(small);
    const mounted = await sh(`mount -t tmpfs -o size=1m tmpfs ${small}`);
    if (mounted.code !== 0) return;
    try {
      const conf = join(dir, 'small.conf');
      // Plain maps (sparse_maps = false) ask for all of their map; a thin sparse one for its header.
      const smallConf = testConf(join(dir, 'data'), 'hostA').replace(
        join(dir, 'data', 'maps'),
        join(small, 'maps'),
      );
      await writeFile(conf, smallConf.replace('[mapperd]\n', '[mapperd]\nsparse_maps = false\n'));
      const t0 = Date.now();
      const r = await sh(`vlmc -c ${conf} create big1 --size 1P`);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(
        /^vlmc: ENOSPC: not enough space for the map of "big1": 1125899906842624 bytes in 4194304-byte blocks need 34359738880 bytes \(32 GiB\) of map, .*small(\/maps)? has \d+ bytes \(.*\) available\n$/,
      );
      expect(Date.now() - t0).toBeLessThan(10_000);
      const r2 = await sh(`vlmc -c ${conf} create big2 --size 100G --json`);
      expect(JSON.parse(r2.stdout.toString()).error).toMatchObject({
        code: 'ENOSPC',
        details: { needed: 25600 * 128 + 512 },
      });
      // nothing was written
      expect((await sh(`find ${small} -type f | wc -l`)).stdout.toString().trim()).toBe('0');
      expect((await sh(`vlmc -c ${conf} create fits1 --size 1G`)).code).toBe(0);
      const sparseConf = join(dir, 'small-sparse.conf');
      await writeFile(sparseConf, smallConf);
      expect((await sh(`vlmc -c ${sparseConf} create thin1 --size 1T`)).code).toBe(0);
      expect(await json(`-c ${sparseConf} info thin1`)).toMatchObject({ size: 2 ** 40 });
    } finally {
      await sh(`umount ${small}`);
    }
  });

  it('vlmc snapshots, children, info (recorded lineage), rollback, flatten (through the holder when mapped)', async () => {
    const r = await sh(
      'head -c 9000000 /dev/urandom | vlmc import - lgv --size 9000000B >/dev/null && vlmc snapshot lgv lg-later >/dev/null' +
        ' && vlmc create lgw --size 4M >/dev/null && vlmc snapshot lgw lgw1 >/dev/null',
    );
    expect(r.code, r.stderr).toBe(0);
    await json('create lgc --snap lg-later');
    await json('snapshot lgv lg-first'); // names out of alphabetical order: the list is by time
    expect(
      (await json<Array<{ name: string; ordinal: number }>>('snapshots lgv')).map((x) => x.name),
    ).toEqual(['lg-later', 'lg-first']);
    expect(await json('children lg-later')).toEqual(['lgc']);
    expect(await json('info lgc')).toMatchObject({ parent: 'lg-later', lineage: 'recorded' });
    expect(await json('info lg-later')).toMatchObject({ origin: 'lgv', lineage: 'recorded' });

    // rollback: refused outside the lineage, saying why; then the volume reads as the snapshot.
    const bad = await sh('vlmc rollback lgv lgw1');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/EINVAL: cannot roll "lgv" back to "lgw1": it is not a snapshot of "lgv"/);
    const want = await exportSha('lg-later');
    expect(await json('rollback lgv lg-later')).toMatchObject({ name: 'lgv', size: 9000000 });
    expect(await exportSha('lgv')).toBe(want);

    // flatten: the clone no longer needs its parent. Mapped, its holder does it while serving it.
    const sock = join(dir, 'lgc.sock');
    expect((await sh(`vlmc map lgc --socket ${sock}`)).code).toBe(0);
    try {
      expect(await json('flatten lgc')).toMatchObject({ name: 'lgc', copied: 3, parent: 'lg-later' });
    } finally {
      await sh('vlmc unmap lgc');
    }
    expect(await json('info lgc')).toMatchObject({ parent: null, flattened: true });
    expect((await sh('vlmc info lgc')).stdout.toString()).toMatch(/^parent: +none \(flattened\)$/m);
    expect(await json('children lg-later')).toEqual([]);
    await json('remove lg-later');
    expect(await exportSha('lgc')).toBe(want);
  });
});

/** SHA-256 of what `vlmc export NAME -` writes. */
async function exportSha(name: string): Promise<string> {
  return sha((await sh(`vlmc export ${name} -`)).stdout);
}
