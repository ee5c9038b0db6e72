/**
 * Incremental backups both ways between vlmc and Ceph RBD, in the RBD diff v1 format, with the
 * real `rbd` tool on the test cluster (scripts/ceph-cluster.sh). Our volumes use file blockers;
 * the RBD image lives in the cluster's "rbd" pool. Writes on our side go through the runtime in
 * process (a Session on the same configuration); on the RBD side through qemu-io's rbd driver.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureCluster } from '../../packages/blocker-rados/test/cluster.js';
import { createVolume, listVolumes, Session, snapshotVolume } from '../../packages/runtime/src/index.js';
import { ENV, Env, sh, VLMC } from '../lib/vlmc.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Why these tests cannot run here (a Ceph or rbd client missing), or null. */
const unavailable = (() => {
  for (const bin of ['rbd', 'ceph-mon', 'ceph-osd', 'qemu-io']) {
    try {
      execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore', env: ENV });
    } catch {
      return `${bin} is not installed`;
    }
  }
  return null;
})();

let env: Env;
let conf: string;
let img: string;

/** Runs rbd on the test cluster; fails the test with its stderr when it fails. */
async function rbd(...args: string[]): Promise<string> {
  const r = await sh('rbd', ['-c', conf, ...args]);
  if (r.code !== 0) throw new Error(`rbd ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** A shell pipeline with ARCHIPELAGO_CONF set; fails with its stderr. */
async function pipe(cmd: string): Promise<void> {
  const r = await sh('bash', ['-o', 'pipefail', '-c', cmd], { env: { ...ENV, ARCHIPELAGO_CONF: env.conf } });
  if (r.code !== 0) throw new Error(`${cmd} failed (${r.code}): ${r.stderr}`);
}

const vlmc = `${process.execPath} ${VLMC}`;

async function vlmcBytes(name: string): Promise<Buffer> {
  const out = join(env.dir, `${name}.raw`);
  await env.ok('export', name, out);
  return readFile(out);
}

async function rbdBytes(spec: string): Promise<Buffer> {
  const out = join(env.dir, `${spec.replace(/[/@]/g, '_')}.rbd.raw`);
  await rbd('export', '--no-progress', spec, out);
  return readFile(out);
}

/** Runs `fn` in process on a Session of the same configuration (what a vlmc command does). */
async function inProcess<T>(fn: (s: Session) => Promise<T>): Promise<T> {
  const s = new Session({ config: env.conf });
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

/** The volume's bytes and the map names, read in process (cheaper than two vlmc runs). */
const state = () =>
  inProcess(async (s) => {
    const rt = await s.runtime();
    const bytes = await rt.composer.read('vol', 0, (await rt.mapper.info('vol')).size);
    return { sha: sha(bytes), names: (await listVolumes(s)).map((v) => v.name) };
  });

describe.skipIf(unavailable !== null)('RBD diff v1 between vlmc and rbd', { timeout: 60_000 }, () => {
  beforeAll(async () => {
    const cluster = await ensureCluster();
    conf = cluster.conf;
    env = await Env.create('rbd-diff');
    img = `rbd/vlmc-diff-${process.pid}-${Date.now().toString(36)}`;
  }, 180_000);

  afterAll(async () => {
    if (img && conf) {
      await sh('rbd', ['-c', conf, 'snap', 'purge', '--no-progress', img]);
      await sh('rbd', ['-c', conf, 'rm', '--no-progress', img]);
    }
    await env?.dispose();
  });

  it('vlmc export-diff → rbd import-diff: rbd export img@s2 equals vlmc export s2', async () => {
    // 24 MiB: data, a hole, data, a partial last block.
    const base = Buffer.concat([randomBytes(6 * MiB), Buffer.alloc(6 * MiB), randomBytes(12 * MiB - 4096)]);
    await inProcess(async (s) => {
      await createVolume(s, 'vol', { size: base.length });
      await (await s.runtime()).composer.write('vol', 0, base);
      await snapshotVolume(s, 'vol', 's1');
    });
    await pipe(`${vlmc} export s1 - | rbd -c ${conf} import --no-progress - ${img}`);
    await rbd('snap', 'create', '--no-progress', `${img}@s1`);

    await inProcess(async (s) => {
      const rt = await s.runtime();
      await rt.composer.write('vol', 4 * MiB + 1000, randomBytes(10_000)); // inside block 1
      await rt.composer.write('vol', 7 * MiB, randomBytes(2 * MiB)); // into the hole
      await rt.composer.writeZeroes('vol', 16 * MiB, 4 * MiB); // block 4 back to zeros
      await rt.composer.write('vol', 0, Buffer.alloc(8192)); // zeros over data: a changed block
      await snapshotVolume(s, 'vol', 's2');
    });
    const d = (await env.vlmc('diff', '--from-snap', 's1', 's2', '--json')).json as {
      extents: Array<{ offset: number; length: number; type: string }>;
    };
    expect(d.extents).toEqual([
      { offset: 0, length: 12 * MiB, type: 'data' },
      { offset: 16 * MiB, length: 4 * MiB, type: 'zero' },
    ]);
    await pipe(`${vlmc} export-diff --from-snap s1 s2 - | rbd -c ${conf} import-diff --no-progress - ${img}`);
    expect(await rbd('snap', 'ls', img)).toMatch(/\bs2\b/);
    expect(sha(await rbdBytes(`${img}@s2`))).toBe(sha(await vlmcBytes('s2')));
  });

  it('rbd export-diff → vlmc import-diff: vlmc export s3 equals rbd export img@s3, and s3 is taken', async () => {
    const spec = `rbd:${img.replace('@', ':')}:conf=${conf}`;
    const q = await sh('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write -P 0x5a 1048576 65536',
      '-c',
      'write -z 12582912 4194304',
      '-c',
      'write -P 0x33 20000000 4096',
      spec,
    ]);
    expect(q.code, q.stderr).toBe(0);
    await rbd('resize', '--no-progress', '--size', '32M', img); // grows: the 's' record
    const q2 = await sh('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 30000000 100000', spec]);
    expect(q2.code, q2.stderr).toBe(0);
    await rbd('snap', 'create', '--no-progress', `${img}@s3`);
    await rbd('export-diff', '--no-progress', '--from-snap', 's2', `${img}@s3`, join(env.dir, 's2-s3.diff'));
    await pipe(`cat ${join(env.dir, 's2-s3.diff')} | ${vlmc} import-diff - vol`);
    const after = await state();
    expect(after.names).toEqual(['s1', 's2', 's3', 'vol']);
    const ours = await vlmcBytes('s3');
    expect(ours.length).toBe(32 * MiB);
    expect(sha(ours)).toBe(sha(await rbdBytes(`${img}@s3`)));
    expect(after.sha).toBe(sha(ours));
  });

  it('a cut, a bad tag, a length past the end, a wrong header: a clear error, nothing changed', async () => {
    await rbd('snap', 'create', '--no-progress', `${img}@s4`);
    await rbd('export-diff', '--no-progress', '--from-snap', 's3', `${img}@s4`, join(env.dir, 's3-s4.diff'));
    const good = await readFile(join(env.dir, 's3-s4.diff'));
    // s3 → s4 changed nothing; give the stream one 'w' record to break (rbd writes the same).
    expect(good.subarray(0, 12).toString()).toBe('rbd diff v1\n');
    const head = good.subarray(0, good.length - 1);
    const w = Buffer.alloc(17 + 4096, 0x42);
    w[0] = 0x77;
    w.writeBigUInt64LE(4096n, 1);
    w.writeBigUInt64LE(4096n, 9);
    const valid = Buffer.concat([head, w, Buffer.from('e')]);
    const past = Buffer.from(valid);
    past.writeBigUInt64LE(BigInt(64 * MiB), head.length + 9);
    const tag = Buffer.from(valid);
    tag[head.length] = 0x57;
    const cases: Array<[string, Buffer, RegExp]> = [
      [
        'cut',
        valid.subarray(0, valid.length - 1000),
        /truncated: the stream ends at byte \d+, inside the 4096 data bytes/,
      ],
      ['tag', tag, /unknown record tag 0x57 at byte \d+/],
      ['past', past, /covers 4096\+67108864, past the image size 33554432/],
      [
        'header',
        Buffer.concat([Buffer.from('rbd diff v9\n'), valid.subarray(12)]),
        /not an RBD diff v1 stream/,
      ],
    ];
    const before = await state();
    for (const [what, bytes] of cases) await writeFile(join(env.dir, `${what}.diff`), bytes);
    // They fail before touching the volume, so they may as well run at once (one from stdin).
    const runs = await Promise.all([
      ...cases.map(([what]) => env.vlmc('import-diff', join(env.dir, `${what}.diff`), 'vol')),
      sh('bash', ['-c', `${vlmc} import-diff - vol --json < ${join(env.dir, 'cut.diff')}`], {
        env: { ...ENV, ARCHIPELAGO_CONF: env.conf },
      }),
    ]);
    cases.forEach(([what, , msg], i) => {
      expect(runs[i]!.code, what).not.toBe(0);
      expect(runs[i]!.stderr, what).toMatch(msg);
      expect(runs[i]!.stderr, what).toMatch(/nothing was changed/);
    });
    expect(JSON.parse(runs[cases.length]!.stdout).error).toMatchObject({
      code: 'EINVAL',
      details: { offset: valid.length - 1000 },
    });
    expect(await state()).toEqual(before);
    expect(before.names).toEqual(['s1', 's2', 's3', 'vol']);
    // The valid one applies: vol gets the 0x42 block and s4.
    await writeFile(join(env.dir, 'valid.diff'), valid);
    await env.ok('import-diff', join(env.dir, 'valid.diff'), 'vol');
    const s4 = await inProcess(async (s) => (await s.runtime()).composer.read('s4', 4096, 4096));
    expect(s4.every((b) => b === 0x42)).toBe(true);
  });
});
