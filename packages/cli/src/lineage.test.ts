/**
 * `vlmc snapshots`, `children`, `rollback`, `flatten` and the lineage `info` shows, run as the
 * built `vlmc` (build first: `pnpm build`), with `--json`.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testConf } from './__fixtures__/conf.js';

const PKG = dirname(dirname(fileURLToPath(import.meta.url)));
const BIN = join(PKG, 'bin', 'vlmc.js');
const VLMC = `${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)}`;
let dir: string;
let env: NodeJS.ProcessEnv;

function sh(script: string): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      '/bin/bash',
      ['-c', `vlmc() { ${VLMC} "$@"; }\nset -o pipefail\n${script}`],
      { env, maxBuffer: 64 * 1024 * 1024, encoding: 'buffer' },
      (err, stdout, stderr) => {
        resolve({
          code: err ? (typeof err.code === 'number' ? err.code : 1) : 0,
          stdout,
          stderr: stderr.toString(),
        });
      },
    );
  });
}

async function json<T = Record<string, unknown>>(args: string): Promise<T> {
  const r = await sh(`vlmc ${args} --json`);
  if (r.code !== 0) throw new Error(`vlmc ${args} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout.toString()) as T;
}

const sha = async (name: string) =>
  createHash('sha256')
    .update((await sh(`vlmc export ${name} -`)).stdout)
    .digest('hex');

beforeAll(async () => {
  if (!existsSync(join(PKG, 'dist', 'bundle', 'vlmc.mjs')))
    throw new Error('the CLI is not built: run pnpm build');
  dir = await mkdtemp(join(tmpdir(), 'vlmc-lineage-'));
  await writeFile(join(dir, 'a.conf'), testConf(join(dir, 'data'), 'hostL'));
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

describe('vlmc lineage commands', { timeout: 120_000 }, () => {
  it('snapshots in order, children, info from the record, rollback, flatten', async () => {
    const r = await sh(
      'head -c 9000000 /dev/urandom | vlmc import - v --size 9000000B >/dev/null && vlmc snapshot v s-later >/dev/null' +
        ' && vlmc create w --size 4M >/dev/null && vlmc snapshot w w1 >/dev/null',
    );
    expect(r.code, r.stderr).toBe(0);
    await json('create c --snap s-later');
    await json('snapshot v a-first'); // names out of alphabetical order: the list is by time
    expect((await json<Array<{ name: string; ordinal: number }>>('snapshots v')).map((x) => x.name)).toEqual([
      's-later',
      'a-first',
    ]);
    expect(await json('children s-later')).toEqual(['c']);
    expect(await json('info c')).toMatchObject({ parent: 's-later', lineage: 'recorded' });
    expect(await json('info s-later')).toMatchObject({ origin: 'v', lineage: 'recorded' });

    // rollback: refused outside the lineage, saying why; then the volume reads as the snapshot.
    const bad = await sh('vlmc rollback v w1');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/EINVAL: cannot roll "v" back to "w1": it is not a snapshot of "v"/);
    const want = await sha('s-later');
    expect(await json('rollback v s-later')).toMatchObject({ name: 'v', size: 9000000 });
    expect(await sha('v')).toBe(want);

    // flatten: the clone no longer needs its parent. Mapped, its holder does it while serving it.
    const sock = join(dir, 'c.sock');
    expect((await sh(`vlmc map c --socket ${sock}`)).code).toBe(0);
    try {
      expect(await json('flatten c')).toMatchObject({ name: 'c', copied: 3, parent: 's-later' });
    } finally {
      await sh('vlmc unmap c');
    }
    expect(await json('info c')).toMatchObject({ parent: null, flattened: true });
    expect((await sh('vlmc info c')).stdout.toString()).toMatch(/^parent: +none \(flattened\)$/m);
    expect(await json('children s-later')).toEqual([]);
    await json('remove s-later');
    expect(await sha('c')).toBe(want);
  });
});
