/**
 * NBD interop on RADOS: NbdServer + volumeExport over a Composer/Mapper whose blockers are
 * RadosBlockers, driven by real clients (qemu-img, qemu-io).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Composer } from '@archipelago/composer';
import { Mapper } from '@archipelago/mapper';
import { NbdServer, volumeExport } from '@archipelago/nbd';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RadosBlocker } from '../src/index.js';
import { freshNamespace, openPair } from './cluster.js';
import { run, runOk } from './run.js';

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;
const BS = 4 * MiB;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let dir: string;
let sock: string;
let server: NbdServer;
let mapper: Mapper;
let blockers: RadosBlocker[] = [];
const uri = (name: string) => `nbd+unix:///${name}?socket=${sock}`;
/** qemu-io on export `name`, one `-c` per command. */
const qemuIo = (name: string, ...cmds: string[]) =>
  run('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri(name)]);
const quiet = { info() {}, warn() {}, error() {}, debug() {} };

beforeAll(async () => {
  const { blockerm, blockerb } = await openPair(freshNamespace('nbd'), 'nbd_embedded');
  blockers = [blockerm, blockerb];
  mapper = new Mapper({ blockerm, blockerb });
  const composer = new Composer({ mapper, blockerb });
  for (const v of ['vm', 'holes']) await mapper.create(v, { size: SIZE, blocksize: BS });
  dir = await mkdtemp(join(tmpdir(), 'archip-rados-nbd-'));
  sock = join(dir, 'nbd.sock');
  const exports = new Map(
    ['vm', 'holes'].map((name) => [
      name,
      volumeExport(composer, { name, size: SIZE, readonly: false, blocksize: BS }),
    ]),
  );
  server = new NbdServer({
    exports: (n: string) => exports.get(n),
    list: () => [...exports.keys()],
    logger: quiet,
  });
  await server.listen({ path: sock });
});

afterAll(async () => {
  await server?.close();
  await mapper?.close();
  await Promise.all(blockers.map((b) => b.close()));
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('NBD on RADOS', () => {
  it('qemu-img convert writes an image in and reads it back out byte-exact', async () => {
    // 20 MiB of random data with a zero hole in the middle, crossing object boundaries.
    const img = randomBytes(20 * MiB);
    img.fill(0, 6 * MiB + 123, 11 * MiB);
    const src = join(dir, 'src.raw');
    const out = join(dir, 'out.raw');
    await writeFile(src, img);
    await runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, uri('vm')]);
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri('vm'), out]);
    const back = await readFile(out);
    expect(back.length).toBe(SIZE);
    expect(sha(back.subarray(0, img.length))).toBe(sha(img));
    expect(back.subarray(img.length).every((b) => b === 0)).toBe(true);
  });

  it('qemu-io writes and reads patterns across object boundaries', async () => {
    const off = BS - 3000;
    const w = await qemuIo('holes', `write -P 0x5a ${off} 10000`, `write -P 0xa5 ${3 * BS - 1} 2`);
    expect(w.code, w.stderr + w.stdout).toBe(0);
    const r = await qemuIo(
      'holes',
      `read -P 0x5a ${off} 10000`,
      `read -P 0 ${off + 10000} 4096`,
      `read -P 0xa5 ${3 * BS - 1} 2`,
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
  });

  it('qemu-img map shows never-written blocks as zero holes', async () => {
    const r = await runOk('qemu-img', ['map', '--output=json', '-f', 'raw', uri('holes')]);
    const extents = JSON.parse(r.stdout) as Array<{
      start: number;
      length: number;
      data: boolean;
      zero: boolean;
    }>;
    const at = (o: number) => extents.find((e) => e.start <= o && o < e.start + e.length);
    expect(at(BS - 100)).toMatchObject({ data: true });
    expect(at(2 * BS + 5)).toMatchObject({ data: true });
    expect(at(5 * BS)).toMatchObject({ data: false, zero: true });
    expect(at(SIZE - 1)).toMatchObject({ data: false, zero: true });
  });
});
