/**
 * The volume life cycle through the daemons, with real parts only: `archipelago start` (the four
 * roles on the file blocker), `vlmc map` (NBD endpoint), fio (nbd engine, crc32c verify), nbdsh,
 * `archipelago gateway` with the real `swift` client, and the built `vlmc` for everything else.
 * - `vlmc flatten` of a mapped clone while fio writes it (mapperd's FLATTEN, online); afterwards
 *   the clone's parent chain is removed and collected, and every byte still reads back.
 * - `vlmc rollback` of a mapped volume is done by its endpoint through mapperd: the NBD client
 *   reads the snapshot at once and writes on.
 * - `vlmc gc` in a loop while fio writes through `vlmc map`, snapshots and clones are taken,
 *   `vlmc hash` runs and `swift upload` stores files; afterwards every byte is verified (fio's
 *   verify, snapshots, clones and hashed maps against what they held when taken, swift download
 *   against the uploads' MD5s), and after a last `vlmc gc` `vlmc du` reports nothing unreferenced.
 * The daemons and the gateway are started once for the file.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENV, makeConfig, type TestConfig, TOOL, VLMC } from '../daemons/helpers.js';
import { requireTool } from '../lib/vlmc.js';

const MiB = 1024 * 1024;
/** Snapshot rounds of the gc test (each after the first removes the previous one: garbage). */
const SNAPSHOTS = 2;
const SWIFT_ENV = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` };

let cfg: TestConfig;
let gateway: ChildProcess | undefined;
let gatewayUrl = '';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  json: unknown;
}

/** Runs a program without blocking this process (the loops below run side by side). */
function exec(cmd: string, args: string[], env: NodeJS.ProcessEnv = ENV, cwd?: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env, cwd, maxBuffer: 64 * MiB, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      let json: unknown;
      if (args.includes('--json')) {
        try {
          json = JSON.parse(stdout);
        } catch {
          json = undefined;
        }
      }
      resolve({ code, stdout, stderr, json });
    });
  });
}

const vlmc = (...args: string[]) => exec(process.execPath, [VLMC, '-c', cfg.conf, ...args]);

/** vlmc that must succeed: its stdout (trimmed), or its JSON with --json. */
async function ok<T = string>(...args: string[]): Promise<T> {
  const r = await vlmc(...args);
  if (r.code !== 0) throw new Error(`vlmc ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return (args.includes('--json') ? r.json : r.stdout.trim()) as T;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

/** A volume or snapshot, every byte (`vlmc export`). */
async function exported(name: string): Promise<Buffer> {
  const path = join(cfg.dir, `${name}.export`);
  await ok('export', name, path);
  return readFileSync(path);
}

/** What a volume reads through its NBD endpoint (a fresh connection). */
async function nbdRead(uri: string, tag: string): Promise<Buffer> {
  const path = join(cfg.dir, `${tag}.nbd`);
  const r = await exec('/usr/bin/nbdcopy', [uri, path]);
  expect(r.code, r.stderr).toBe(0);
  return readFileSync(path);
}

interface FioResult {
  code: number;
  out: string;
  error: number;
  writes: number;
  reads: number;
}

/**
 * fio on `uri` (nbd engine): random writes of `bs` over [offset, offset + size), each block
 * checksummed (crc32c), read back and checked `backlog` writes later and at the end; any I/O
 * error or bad block fails the job. `verifyOnly`: only read back and check what the same job
 * wrote before.
 */
function fio(
  uri: string,
  o: {
    offset: string;
    size: string;
    bs: string;
    iops?: number;
    backlog?: number;
    numberIos?: number;
    verifyOnly?: boolean;
  },
): Promise<FioResult> {
  const params: Record<string, string | number | undefined> = {
    name: 'gc',
    ioengine: 'nbd',
    uri,
    rw: 'randwrite',
    bs: o.bs,
    offset: o.offset,
    size: o.size,
    iodepth: 8,
    verify: 'crc32c',
    verify_fatal: 1,
    'output-format': 'json',
    rate_iops: o.iops || undefined,
    verify_backlog: o.backlog,
    number_ios: o.numberIos,
    verify_only: o.verifyOnly ? 1 : undefined,
  };
  const args = Object.entries(params).flatMap(([k, v]) => (v === undefined ? [] : [`--${k}=${v}`]));
  // In the test's directory: fio leaves its verify state files where it runs.
  return exec('fio', args, ENV, cfg.dir).then((r): FioResult => {
    const out = r.stdout + r.stderr;
    let job: { error: number; write: { total_ios: number }; read: { total_ios: number } } | undefined;
    try {
      job = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0];
    } catch {
      job = undefined;
    }
    return {
      code: r.code,
      out,
      error: job?.error ?? -1,
      writes: job?.write.total_ios ?? 0,
      reads: job?.read.total_ios ?? 0,
    };
  });
}

/** fio ran clean: no I/O error, no bad block, and it wrote (unless `writes` is null) and verified every block. */
function expectClean(r: FioResult, writes: number | null, reads = writes): void {
  expect(r.code, r.out).toBe(0);
  expect(r.error, r.out).toBe(0);
  expect(r.out).not.toMatch(/verify failed|bad magic|Input\/output error/i);
  if (writes !== null) expect(r.writes, r.out).toBe(writes);
  expect(r.reads, r.out).toBe(reads);
}

const swift = (...args: string[]) =>
  exec('swift', ['-A', `${gatewayUrl}/auth/v1.0`, '-U', 'test:tester', '-K', 'testing', ...args], SWIFT_ENV);

beforeAll(async () => {
  requireTool('fio', 'fio');
  requireTool('nbdcopy', 'libnbd-bin');
  requireTool('nbdsh', 'libnbd-bin');
  requireTool('swift', 'python3-swiftclient');
  cfg = makeConfig();
  const started = cfg.tool('start');
  if (started.status !== 0) throw new Error(`archipelago start failed: ${started.stderr}`);
  // The gateway on the daemons' blockers, as an operator runs it (users from the environment).
  const gw = spawn(process.execPath, [TOOL, 'gateway', '-c', cfg.conf, '--port', '0'], {
    env: { ...ENV, ARCHIPELAGO_GATEWAY_USERS: 'test,test:tester,testing' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  gateway = gw;
  let err = '';
  gw.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  gatewayUrl = await new Promise<string>((resolve, reject) => {
    let out = '';
    gw.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    gw.once('exit', (code) => reject(new Error(`the gateway exited with ${code}: ${err}`)));
  });
}, 60_000);

afterAll(async () => {
  if (gateway && gateway.exitCode === null) {
    const g = gateway;
    await new Promise<void>((r) => {
      g.once('exit', () => r());
      g.kill('SIGTERM');
    });
  }
  cfg?.cleanup();
});

describe('rollback and flatten through the daemons (vlmc map)', () => {
  it('flattens a mapped clone while fio writes it; every byte reads back after its parents are collected', async () => {
    // 16 MiB of 4 MiB blocks: the clone shares 4 blocks with its parent snapshot.
    const img = randomBytes(16 * MiB);
    writeFileSync(join(cfg.dir, 'img.raw'), img);
    await ok('import', join(cfg.dir, 'img.raw'), 'base');
    await ok('snapshot', 'base', 'base-s');
    await ok('create', 'clone', '--snap', 'base-s');
    const uri = await ok('map', 'clone');

    // fio writes the second half (its blocks copy up beside the flatten's copy-ups): short jobs,
    // each checking what it wrote, one after the other until the flatten is done; then one job
    // writes the whole half, for a verify-only pass after the parents are collected.
    let flattening = true;
    const jobs = (async () => {
      const out: FioResult[] = [];
      while (flattening) out.push(await fio(uri, { offset: '8M', size: '8M', bs: '64k', numberIos: 32 }));
      return out;
    })();
    await new Promise((r) => setTimeout(r, 200));
    const flat = await ok<{ name: string; copied: number; parent: string | null }>(
      'flatten',
      'clone',
      '--json',
    );
    flattening = false;
    const during = await jobs;
    for (const j of during) expectClean(j, 32);
    expect(during.length, 'fio jobs ran while the flatten ran').toBeGreaterThan(0);
    expect(flat).toMatchObject({ name: 'clone', parent: 'base-s' });
    expect(flat.copied).toBeGreaterThan(0);
    expectClean(await fio(uri, { offset: '8M', size: '8M', bs: '64k' }), 128);

    // The clone depends on nothing: its parent chain removed and collected, it reads the same.
    await ok('remove', 'base-s');
    await ok('remove', 'base');
    // Both in the trash, which alone names the image's four blocks now (the clone has its own).
    expect(await ok('du', '--json')).toMatchObject({
      trashEntries: 2,
      trashObjects: 4,
      trashBytes: img.length,
    });
    await ok('gc', '--grace', '0');
    const now = await nbdRead(uri, 'clone-after');
    expect(sha(now.subarray(0, 8 * MiB)), 'the first half, never written: the image').toBe(
      sha(img.subarray(0, 8 * MiB)),
    );
    expectClean(await fio(uri, { offset: '8M', size: '8M', bs: '64k', verifyOnly: true }), null, 128);

    // Rollback of a mapped volume: its endpoint (the holder) does it through mapperd, its I/O
    // drained first; the NBD client reads the snapshot's bytes at once, and writes on.
    await ok('snapshot', 'clone', 'clone-s');
    const atSnap = await exported('clone-s');
    const w = await exec('/usr/bin/nbdsh', ['-u', uri, '-c', 'h.pwrite(b"\\xaa" * 65536, 0)']);
    expect(w.code, w.stderr).toBe(0);
    expect((await nbdRead(uri, 'clone-written')).subarray(0, 65536).equals(Buffer.alloc(65536, 0xaa))).toBe(
      true,
    );
    const rolled = await ok<{ name: string; epoch: string }>('rollback', 'clone', 'clone-s', '--json');
    expect(rolled.name).toBe('clone');
    expect(sha(await nbdRead(uri, 'clone-rolled')), 'the client reads the snapshot').toBe(sha(atSnap));
    const w2 = await exec('/usr/bin/nbdsh', ['-u', uri, '-c', 'h.pwrite(b"\\xbb" * 4096, 8192)']);
    expect(w2.code, w2.stderr).toBe(0);
    await ok('unmap', 'clone');
    const after = await exported('clone');
    expect(after.subarray(8192, 8192 + 4096).equals(Buffer.alloc(4096, 0xbb))).toBe(true);
    expect(sha(Buffer.concat([after.subarray(0, 8192), after.subarray(8192 + 4096)]))).toBe(
      sha(Buffer.concat([atSnap.subarray(0, 8192), atSnap.subarray(8192 + 4096)])),
    );
    expect(sha(await exported('clone-s')), 'the snapshot unchanged').toBe(sha(atSnap));
  }, 120_000);
});

describe('import-diff through the daemons', () => {
  it('vlmc export-diff, then rollback (mapperd) and import-diff of it: the volume and the to-snapshot come back byte for byte', async () => {
    const img = randomBytes(8 * MiB);
    writeFileSync(join(cfg.dir, 'dv.raw'), img);
    await ok('import', join(cfg.dir, 'dv.raw'), 'dv');
    await ok('snapshot', 'dv', 'dv-s1');
    const uri = await ok('map', 'dv');
    const w = await exec('/usr/bin/nbdsh', [
      '-u',
      uri,
      '-c',
      'h.pwrite(b"\\x55" * 70000, 4 * 1048576 + 100)',
    ]);
    expect(w.code, w.stderr).toBe(0);
    await ok('unmap', 'dv');
    await ok('snapshot', 'dv', 'dv-s2');
    const atS2 = await exported('dv-s2');
    expect(sha(atS2)).not.toBe(sha(img));
    const diff = join(cfg.dir, 'dv.diff');
    await ok('export-diff', '--from-snap', 'dv-s1', 'dv-s2', diff);
    // Back to s1 (mapperd's ROLLBACK), s2 gone: the diff brings both back.
    await ok('rollback', 'dv', 'dv-s1');
    expect(sha(await exported('dv'))).toBe(sha(img));
    await ok('remove', 'dv-s2');
    await ok('import-diff', diff, 'dv');
    expect(sha(await exported('dv'))).toBe(sha(atS2));
    expect(sha(await exported('dv-s2'))).toBe(sha(atS2));
    expect(sha(await exported('dv-s1')), 'the from-snapshot unchanged').toBe(sha(img));
    // No staging map of the import is left among the volumes.
    expect(await ok('ls')).not.toMatch(/import-diff/);
  }, 60_000);
});

describe('gc under load', () => {
  it('vlmc gc in a loop while fio, snapshots, clones, hashes and swift uploads run: every byte survives', async () => {
    await ok('create', 'g', '--size', '16M');
    const uri = await ok('map', 'g');
    // fio jobs one after the other while the other loops work: each writes every 16 KiB block
    // of the first 8 MiB once in random order (at 300/s: the machine has other work to do),
    // reads each back 64 writes later and all at the end. The last one's data is checked again
    // (verify-only) once everything is over.
    const job = { offset: '0', size: '8M', bs: '16k', iops: 300, backlog: 64 };
    let working = 2;
    const loading = () => working > 0;
    const t0 = Date.now();
    let writing = false;
    const fioLoop = (async () => {
      const out: FioResult[] = [];
      do {
        writing = true;
        out.push(await fio(uri, job));
        writing = false;
      } while (loading());
      return out;
    })();

    // gc, over and over, with no grace: only the holds and the mark protect what is in flight.
    const gcRuns: { freedObjects: number; freedBytes: number }[] = [];
    let gcStarted = 0;
    const gcLoop = (async () => {
      while (loading()) {
        gcStarted++;
        gcRuns.push(await ok('gc', '--grace', '0', '--json'));
      }
    })();
    /** Waits, the load going on, until a gc run that started after this call is over. */
    const nextGc = async () => {
      const after = gcStarted + 1;
      while (gcRuns.length < after) await new Promise((r) => setTimeout(r, 50));
    };

    // Snapshots of the volume being written, each exported at once (what it must keep reading),
    // a clone of each and its hashed map; the previous snapshot and clone go (garbage). Each loop
    // ends after a gc run that started after its last removal.
    const kept: { snap: string; clone: string; hashed: string; sha: string }[] = [];
    let fioDuringSnapshots = 0;
    const snapLoop = (async () => {
      for (let i = 0; i < SNAPSHOTS; i++) {
        const snap = `g-s${i}`;
        const clone = `g-c${i}`;
        if (writing) fioDuringSnapshots++;
        await ok('snapshot', 'g', snap);
        const sum = sha(await exported(snap));
        await ok('create', clone, '--snap', snap);
        const hashed = await ok('hash', snap);
        kept.push({ snap, clone, hashed, sha: sum });
        if (kept.length > 1) {
          const old = kept.shift()!;
          await ok('remove', old.clone);
          await ok('remove', old.snap);
        }
      }
      await nextGc();
    })().finally(() => working--);

    // Files through the gateway: every other one deleted again (its blocks become garbage).
    const files: { name: string; md5: string }[] = [];
    const uploadLoop = (async () => {
      for (let j = 0; j < 3; j++) {
        const data = randomBytes(6 * MiB + j * 4096);
        const name = `f${j}.bin`;
        writeFileSync(join(cfg.dir, name), data);
        const up = await swift('upload', '--object-name', name, 'gc-c', join(cfg.dir, name));
        expect(up.code, up.stderr).toBe(0);
        if (j % 2 === 1) {
          const del = await swift('delete', 'gc-c', name);
          expect(del.code, del.stderr).toBe(0);
        } else files.push({ name, md5: md5(data) });
      }
      await nextGc();
    })().finally(() => working--);

    await Promise.all([snapLoop, uploadLoop]);
    const loadMs = Date.now() - t0;
    const [jobs] = await Promise.all([fioLoop, gcLoop]);
    for (const j of jobs) expectClean(j, 512);
    const freed = gcRuns.reduce((a, r) => a + r.freedObjects, 0);
    console.log(
      `gc under load: ${loadMs} ms of load; ${jobs.length} fio jobs (${jobs.length * 512} writes, each verified); ${gcRuns.length} gc runs freed ${freed} objects; ${fioDuringSnapshots}/${SNAPSHOTS} snapshots taken under fio`,
    );
    expect(gcRuns.length).toBeGreaterThanOrEqual(2);
    expect(freed, 'the loop collected the garbage made meanwhile').toBeGreaterThan(0);

    // Every byte: the volume by fio's own check (a verify-only pass of the same job), snapshots,
    // their clones and hashed maps against what each snapshot held when taken, and the files.
    expectClean(await fio(uri, { ...job, iops: 0, verifyOnly: true }), null, 512);
    await Promise.all(
      kept.flatMap((k) =>
        [k.snap, k.clone, k.hashed].map(async (name) =>
          expect(sha(await exported(name)), `${name} (of ${k.snap})`).toBe(k.sha),
        ),
      ),
    );
    await Promise.all(
      files.map(async (file) => {
        const out = join(cfg.dir, `down-${file.name}`);
        const down = await swift('download', 'gc-c', file.name, '-o', out);
        expect(down.code, down.stderr).toBe(0); // swift checks the ETag (MD5) itself
        expect(md5(readFileSync(out)), file.name).toBe(file.md5);
      }),
    );

    // A last gc leaves nothing unreferenced (the trash, ttl 0, is emptied by it too).
    await ok('unmap', 'g');
    await ok('gc', '--grace', '0');
    const du = await ok<Record<string, number>>('du', '--json');
    expect(du).toMatchObject({
      unreferencedObjects: 0,
      unreferencedBytes: 0,
      trashEntries: 0,
      trashBytes: 0,
    });
  }, 120_000);
});
