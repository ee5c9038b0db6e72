/**
 * The endpoint's direct data path (direct-data.ts) against the real daemons, started as
 * `archipelago start` starts them (peers.ts `start`, the built peers), on a real segment and real
 * files: an endpoint-like runtime (`compose: 'local'`) reads and writes data objects itself, and
 * what it writes is what other clients of the daemons read (vlmcd, which reads through blockerb).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileBlocker } from '@archipelago/blocker-file';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LoadedConfig, loadConfig, serializeConfig } from './config.js';
import { dataPathOf } from './daemons-client.js';
import { chooseDataPath, DATA_PATH_ENV, DirectDataBlocker, requestedDataPath } from './direct-data.js';
import { start, stop } from './peers.js';
import type { Runtime } from './types.js';
import { openRuntime } from './wiring.js';

const MiB = 2 ** 20;
const BS = 4 * MiB;

let dir: string;
let loaded: LoadedConfig | undefined;
/** The endpoint's runtime (direct data path). */
let ep: Runtime;
/** A `vlmc` command's runtime: I/O through vlmcd, which reads and writes through blockerb. */
let cmd: Runtime;

/** A configuration in `dir` (`set`: a second daemon set, with its own segment and directories). */
function configFile(name: string, blockerb: Record<string, unknown>, set = ''): string {
  const conf = join(dir, name);
  const ports = { blockerb: 10, blockerm: 12, mapperd: 11, vlmcd: 20 };
  const peers = Object.fromEntries(
    Object.entries(ports).map(([role, p]) => [role, { portno_start: p, portno_end: p, nr_ops: 16 }]),
  );
  writeFileSync(
    conf,
    serializeConfig({
      // The peers stay root: the test's directories are not reachable by another account.
      ARCHIPELAGO: { USER: 'root', GROUP: 'root', RUN_DIR: join(dir, `run${set}`) },
      // A small segment of its own (ports 10..30 for the peers, 100..110 for tools).
      XSEG: Object.fromEntries([
        ['segment_name', `direct${set}${process.pid}`],
        ['SEGMENT_SIZE', 400],
        ['SEGMENT_PORTS', 128],
        ['SEGMENT_DYNPORTS', 64],
        ['VTOOL_START', 100],
        ['VTOOL_END', 110],
      ]),
      PEERS: { ROLES: Object.keys(ports).join(' ') },
      blockerb: {
        ...peers.blockerb,
        type: 'file_blocker',
        archip_dir: join(dir, `blocks${set}`),
        ...blockerb,
      },
      blockerm: { ...peers.blockerm, type: 'file_blocker', archip_dir: join(dir, `maps${set}`) },
      // A short volume lease: mapperd renews every second and finds a lost lock within one.
      mapperd: {
        ...peers.mapperd,
        blockerb_port: ports.blockerb,
        blockerm_port: ports.blockerm,
        lease_timeout: 3,
      },
      vlmcd: { ...peers.vlmcd, portno_end: 30, blocker_port: ports.blockerb, mapper_port: ports.mapperd },
    }),
  );
  return conf;
}

/** Runs `fn` with ARCHIPELAGO_DATA_PATH set to `v` (unset: undefined). */
async function withDataPath<T>(v: string | undefined, fn: () => Promise<T>): Promise<T> {
  const before = process.env[DATA_PATH_ENV];
  if (v === undefined) delete process.env[DATA_PATH_ENV];
  else process.env[DATA_PATH_ENV] = v;
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env[DATA_PATH_ENV];
    else process.env[DATA_PATH_ENV] = before;
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'archip-direct-'));
  // blockerb's default sync (flush: write-back), as `archipelago start` runs it.
  loaded = loadConfig(configFile('archipelago.conf', {}), { env: {} });
  await start(loaded, undefined, () => {});
  ep = await withDataPath(undefined, () => openRuntime(loaded!, { compose: 'local' }));
  cmd = await openRuntime(loaded, { compose: 'vlmcd' });
}, 30_000);

afterAll(async () => {
  await ep?.close().catch(() => {});
  await cmd?.close().catch(() => {});
  if (loaded) await stop(loaded, undefined, { force: true }, () => {}).catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

const direct = () => ep.blockerb as DirectDataBlocker;
const own = () => direct().data as FileBlocker;

describe('the endpoint direct data path (daemon wiring, files)', () => {
  it('is taken when the store is reachable, and the endpoint reads and writes it itself', async () => {
    expect(ep.wiring).toBe('daemons');
    expect(dataPathOf(ep)?.path).toBe('direct');
    expect(ep.blockerb).toBeInstanceOf(DirectDataBlocker);
    expect(dataPathOf(cmd)).toBeNull(); // vlmcd composes: no data path of its own
    await ep.mapper.create('v1', { size: 16 * MiB });
    await ep.mapper.openVolume('v1');
    const a = randomBytes(64 * 1024);
    const b = randomBytes(4096);
    const before = { ...direct().stats };
    await ep.composer.write('v1', 4 * MiB - 4096, a); // across a block boundary
    await ep.composer.write('v1', 9 * MiB + 512, b);
    expect(await ep.composer.read('v1', 4 * MiB - 4096, a.length)).toEqual(a);
    expect(direct().stats.writes - before.writes).toBe(3);
    expect(direct().stats.reads - before.reads).toBeGreaterThan(0);
    // Another client (vlmcd, through blockerb) reads the same bytes.
    expect(await cmd.composer.read('v1', 4 * MiB - 4096, a.length)).toEqual(a);
    expect(await cmd.composer.read('v1', 9 * MiB + 512, b.length)).toEqual(b);
    // And the endpoint reads what vlmcd wrote.
    const c = randomBytes(8192);
    await cmd.composer.write('v1', 12 * MiB, c);
    expect(await ep.composer.read('v1', 12 * MiB, c.length)).toEqual(c);
  });

  it('flush makes the endpoint write-back writes durable (its own blocker and blockerb)', async () => {
    await ep.composer.write('v1', 5 * MiB, randomBytes(4096));
    expect(own().unsynced).toBeGreaterThan(0);
    await ep.composer.flush('v1');
    expect(own().unsynced).toBe(0);
    expect(own().unsyncedDirs).toBe(0);
    // A FUA write is durable at once: nothing left for a flush.
    await ep.composer.write('v1', 6 * MiB, randomBytes(4096), { fua: true });
    expect(own().unsynced).toBe(0);
  });

  it('a block discarded and written again (the same object name) is written to the new object', async () => {
    // Block 0: the endpoint writes it (its fd of v1's object 0 is cached), discards the whole
    // block (blockerb unlinks the object), and writes it again: the copy-up names the same
    // object, which must be the new file, not the unlinked inode behind the cached fd.
    const first = randomBytes(4096);
    await ep.composer.write('v1', 0, first);
    expect(await cmd.composer.read('v1', 0, 4096)).toEqual(first);
    await ep.composer.trim('v1', 0, BS);
    expect(await cmd.composer.read('v1', 0, 4096)).toEqual(Buffer.alloc(4096));
    const second = randomBytes(4096);
    await ep.composer.write('v1', 0, second);
    expect(await ep.composer.read('v1', 0, 4096)).toEqual(second);
    expect(await cmd.composer.read('v1', 0, 4096)).toEqual(second);
    await ep.composer.flush('v1');
    expect(await cmd.composer.read('v1', 0, 4096)).toEqual(second);
  });

  it("another client's snapshot recalls the lease: the endpoint's writes are made durable first, the snapshot keeps the old bytes, the volume gets the new ones", async () => {
    const old = randomBytes(4096);
    await ep.composer.write('v1', 2 * MiB, old);
    const resets = direct().stats.fdResets;
    // Write-back: the endpoint's write is not durable yet. vlmcd's snapshot flushes only
    // blockerb; the recall makes the endpoint flush its own writes before the snapshot is taken.
    expect(own().unsynced).toBeGreaterThan(0);
    await cmd.composer.snapshot('v1', 'v1-s1');
    expect(own().unsynced).toBe(0);
    expect(direct().stats.recallFlushes).toBeGreaterThan(0);
    const now = randomBytes(4096);
    await ep.composer.write('v1', 2 * MiB, now);
    expect(direct().stats.fdResets).toBeGreaterThan(resets);
    expect(await cmd.composer.read('v1-s1', 2 * MiB, 4096)).toEqual(old);
    expect(await cmd.composer.read('v1', 2 * MiB, 4096)).toEqual(now);
    expect(await ep.composer.read('v1', 2 * MiB, 4096)).toEqual(now);
  });

  it('ARCHIPELAGO_DATA_PATH=segment sends the data to blockerb', async () => {
    const seg = await withDataPath('segment', () => openRuntime(loaded!, { compose: 'local' }));
    try {
      expect(dataPathOf(seg)).toMatchObject({ path: 'segment', blocker: null });
      expect(seg.blockerb).not.toBeInstanceOf(DirectDataBlocker);
      const x = randomBytes(4096);
      await seg.mapper.create('v2', { size: 8 * MiB });
      await seg.composer.write('v2', 4096, x);
      expect(await seg.composer.read('v2', 4096, 4096)).toEqual(x);
      expect(await cmd.composer.read('v2', 4096, 4096)).toEqual(x);
      await seg.composer.close('v2');
    } finally {
      await seg.close();
    }
  });
});

describe('fencing (files)', () => {
  it('a volume lock taken by another owner stops the endpoint direct writes (EIO fenced), and they stay stopped', async () => {
    await ep.mapper.create('v3', { size: 8 * MiB });
    await ep.mapper.openVolume('v3');
    const before = randomBytes(4096);
    await ep.composer.write('v3', 0, before); // copied up; the mapping is cached under a lease
    expect(await ep.composer.read('v3', 0, 4096)).toEqual(before);
    // Another owner's record replaces mapperd's (what a breaker elsewhere does when it takes the
    // lock): mapperd finds the lock lost at its next renewal and fences itself; it renews no map
    // lease and answers no lookup, so the endpoint's cached mapping is used only until its lease
    // runs out.
    const maps = new FileBlocker({ dir: join(dir, 'maps') });
    const lock = maps.lockPath('v3');
    await maps.close();
    // The new owner keeps its record (as it would renew it): rewritten every 100 ms, so a renewal
    // of mapperd's racing the first rewrite cannot leave mapperd's record in place.
    const take = () => {
      writeFileSync(`${lock}.tmp`, 'otherhost_embedded\n');
      renameSync(`${lock}.tmp`, lock);
    };
    take();
    const owner = setInterval(take, 100);
    let failure: unknown;
    const writesBefore = direct().stats.writes;
    try {
      for (let i = 0; i < 200 && failure === undefined; i++) {
        try {
          await ep.composer.write('v3', 0, randomBytes(4096));
          await new Promise((r) => setTimeout(r, 50));
        } catch (e) {
          failure = e;
        }
      }
    } finally {
      clearInterval(owner);
    }
    expect(failure).toMatchObject({ code: 'EIO' });
    expect(String((failure as Error).message)).toMatch(/fenced/);
    const writesAtFence = direct().stats.writes;
    expect(writesAtFence).toBeGreaterThan(writesBefore); // it wrote directly until then
    // From then on no write reaches the endpoint's blocker.
    for (const at of [0, 4096, 4 * MiB]) {
      await expect(ep.composer.write('v3', at, randomBytes(4096))).rejects.toMatchObject({ code: 'EIO' });
    }
    expect(direct().stats.writes).toBe(writesAtFence);
  }, 30_000);
});

describe('without map leases (ARCHIPELAGO_MAP_LEASE_MS=0)', () => {
  it('every lookup is answered without a lease, and a block discarded and written again still lands in the new object', async () => {
    const before = process.env.ARCHIPELAGO_MAP_LEASE_MS;
    process.env.ARCHIPELAGO_MAP_LEASE_MS = '0'; // read by mapperd, which `start` spawns with this environment
    const noLease = loadConfig(configFile('nolease.conf', {}, 'b'), { env: {} });
    let a: Runtime | undefined;
    let v: Runtime | undefined;
    try {
      await start(noLease, undefined, () => {});
      a = await withDataPath(undefined, () => openRuntime(noLease, { compose: 'local' }));
      v = await openRuntime(noLease, { compose: 'vlmcd' });
      const d = a.blockerb as DirectDataBlocker;
      expect(d).toBeInstanceOf(DirectDataBlocker);
      await a.mapper.create('n1', { size: 8 * MiB });
      await a.mapper.openVolume('n1');
      const first = randomBytes(4096);
      await a.composer.write('n1', 0, first);
      const resets = d.stats.fdResets;
      expect(await a.composer.read('n1', 0, 4096)).toEqual(first);
      expect(d.stats.fdResets).toBeGreaterThan(resets); // no lease: the fds do not outlive a lookup
      await a.composer.trim('n1', 0, BS);
      const second = randomBytes(4096);
      await a.composer.write('n1', 0, second);
      await a.composer.flush('n1');
      expect(await v.composer.read('n1', 0, 4096)).toEqual(second);
    } finally {
      await a?.close().catch(() => {});
      await v?.close().catch(() => {});
      await stop(noLease, undefined, { force: true }, () => {}).catch(() => {});
      if (before === undefined) delete process.env.ARCHIPELAGO_MAP_LEASE_MS;
      else process.env.ARCHIPELAGO_MAP_LEASE_MS = before;
    }
  }, 30_000);
});

describe('chooseDataPath', () => {
  it('takes the segment for RADOS unless the direct path is asked for and this process can read the ceph.conf and keyring', () => {
    const rados = loadConfig(
      configFile('rados.conf', { type: 'rados_blocker', pool: 'p', archip_dir: undefined }),
      { env: {} },
    );
    expect(chooseDataPath(rados, {})).toMatchObject({
      path: 'segment',
      why: /take-over, a daemons restart's too, fences are lost/,
    });
    expect(chooseDataPath(rados, { [DATA_PATH_ENV]: 'direct' })).toMatchObject({
      path: 'direct',
      why: /^ARCHIPELAGO_DATA_PATH=direct: \[blockerb\] is a rados_blocker/,
    });
    expect(chooseDataPath(rados, { [DATA_PATH_ENV]: 'segment' })).toMatchObject({ path: 'segment' });
    const conf = join(dir, 'no', 'ceph.conf');
    const unreadable = loadConfig(
      configFile('rados-noconf.conf', {
        type: 'rados_blocker',
        pool: 'p',
        ceph_conf: conf,
        archip_dir: undefined,
      }),
      { env: {} },
    );
    expect(chooseDataPath(unreadable, {})).toMatchObject({
      path: 'segment',
      why: `cannot read [blockerb] ceph_conf ${conf} (ENOENT)`,
    });
    expect(chooseDataPath(unreadable, { [DATA_PATH_ENV]: 'segment' })).toMatchObject({ path: 'segment' });
    expect(() => chooseDataPath(unreadable, { [DATA_PATH_ENV]: 'direct' })).toThrow(
      /ARCHIPELAGO_DATA_PATH=direct: cannot read \[blockerb\] ceph_conf/,
    );
  });

  it('takes the segment when the directory cannot be reached, and says why', () => {
    const gone = loadConfig(configFile('gone.conf', { archip_dir: join(dir, 'no', 'such') }), { env: {} });
    expect(chooseDataPath(gone, {})).toMatchObject({
      path: 'segment',
      why: /cannot read and write .*ENOENT/,
    });
    expect(chooseDataPath(loaded!, {})).toMatchObject({ path: 'direct' });
    expect(chooseDataPath(loaded!, { [DATA_PATH_ENV]: 'segment' })).toMatchObject({ path: 'segment' });
  });

  it('refuses a value it does not know', () => {
    expect(requestedDataPath({})).toBe('auto');
    expect(() => requestedDataPath({ [DATA_PATH_ENV]: 'fast' })).toThrow(
      /ARCHIPELAGO_DATA_PATH=fast: expected "direct" .*"segment" .*"auto"/,
    );
  });
});
