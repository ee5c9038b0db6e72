/** RADOS specifics beyond the conformance suite: lock visibility and reclaim, hash, connect errors. */
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { currentProcess } from '@archipelago/blocker';
import { ArchipelagoError } from '@archipelago/libxseg';
import { afterEach, describe, expect, it } from 'vitest';
import { NOT_BUILT_MESSAGE, RADOS_LOCK_NAME, RadosBlocker, RECORD_XATTR } from '../src/index.js';
import { ensureCluster, freshNamespace, lockInfo, openRados, type RadosLockInfo } from './cluster.js';
import { runOk } from './run.js';

const opened: RadosBlocker[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((b) => b.close()));
});
async function open(o: Partial<ConstructorParameters<typeof RadosBlocker>[0]> & { namespace: string }) {
  const b = await openRados({ pool: 'maps', ...o });
  opened.push(b);
  return b;
}

describe('RADOS locks', () => {
  it('shows the holder in `rados lock info` and keeps the lock on <name>_lock', async () => {
    const ns = freshNamespace('lock');
    const b = await open({ namespace: ns, identity: 'hostA_1' });
    await b.acquire('vol1');
    const { conf } = await ensureCluster();
    const info = await lockInfo(conf, 'maps', ns, 'vol1');
    expect(info.name).toBe(RADOS_LOCK_NAME);
    expect(info.type).toBe('exclusive');
    expect(info.lockers).toHaveLength(1);
    expect(info.lockers[0]?.cookie).toBe(b.cookie);
    expect(info.lockers[0]?.description).toContain('hostA_1');
    expect(info.lockers[0]?.name).toBe(b.clientName);
    expect(await b.lockOwner('vol1')).toBe('hostA_1');
  });

  it('gives each instance its own cookie; a restarted instance of the same identity reclaims its lock', async () => {
    const ns = freshNamespace('reclaim');
    const first = await open({ namespace: ns, identity: 'hostA_1' });
    await first.acquire('v');
    await first.close(); // "crash": the lock stays, held by the old cookie
    const again = await open({ namespace: ns, identity: 'hostA_1' });
    expect(again.cookie).not.toBe(first.cookie);
    await again.acquire('v'); // reclaimed, not ELOCKED
    const other = await open({ namespace: ns, identity: 'hostB_2' });
    const e = await other.acquire('v').catch((x: unknown) => x);
    expect(ArchipelagoError.is(e, 'ELOCKED')).toBe(true);
    expect((e as ArchipelagoError).details.owner).toBe('hostA_1');
    await again.release('v');
    expect(await again.lockOwner('v')).toBeNull();
  });

  it('wakes a waiting acquire through notify, long before the re-check timer', async () => {
    const ns = freshNamespace('notify');
    const a = await open({ namespace: ns, identity: 'hostA_1' });
    const b = await open({ namespace: ns, identity: 'hostB_2', lockRecheckMs: 60_000 });
    await a.acquire('w');
    const waiting = b.acquire('w', { wait: true, timeoutMs: 20_000 });
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    await a.release('w');
    await waiting;
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(await a.lockOwner('w')).toBe('hostB_2');
  });

  it('shows identity and pid in `rados lock info`, the whole record in its xattr, both renewed together', async () => {
    const ns = freshNamespace('record');
    const b = await open({ namespace: ns, identity: 'hostA_1', leaseMs: 60_000 });
    const { conf } = await ensureCluster();
    const xattr = async (vol: string) =>
      JSON.parse(
        (await runOk('rados', ['-c', conf, '-p', 'maps', '-N', ns, 'getxattr', `${vol}_lock`, RECORD_XATTR]))
          .stdout,
      ) as Record<string, unknown>;
    /** `rados lock info`'s expiration (OSD clock) in ms since the epoch; 0: none. */
    const expiration = (info: RadosLockInfo) =>
      Date.parse((info.lockers[0]?.expiration ?? '').replace(/\+0000$/, 'Z')) || 0;

    await b.acquire('vol1');
    const rec = await b.lockInfo('vol1');
    expect(rec).toEqual({
      owner: 'hostA_1',
      process: currentProcess(),
      expires: rec?.expires,
      addr: b.clientAddr,
    });
    let info = await lockInfo(conf, 'maps', ns, 'vol1');
    expect(info.lockers[0]?.description).toBe(`archipelago hostA_1 on ${hostname()} pid ${process.pid}`);
    expect(Math.abs(expiration(info) - (rec?.expires as number))).toBeLessThan(2000);
    expect(await xattr('vol1')).toEqual({ ...rec, client: b.clientName, cookie: b.cookie });

    const renewed = await b.renew('vol1', { leaseMs: 120_000 });
    expect(renewed.expires).toBeGreaterThan((rec?.expires as number) + 50_000);
    info = await lockInfo(conf, 'maps', ns, 'vol1');
    expect(Math.abs(expiration(info) - (renewed.expires as number))).toBeLessThan(2000);
    expect((await xattr('vol1')).expires).toBe(renewed.expires);
    expect((await b.lockInfo('vol1'))?.expires).toBe(renewed.expires);

    await b.acquire('vol1', { hold: 'host' });
    info = await lockInfo(conf, 'maps', ns, 'vol1');
    expect(info.lockers[0]?.description).toBe(`archipelago hostA_1 on ${hostname()} (host hold)`);
    expect(expiration(info)).toBe(0);
    expect(await xattr('vol1')).toMatchObject({ owner: 'hostA_1', process: null, expires: null });

    await b.release('vol1');
    expect((await lockInfo(conf, 'maps', ns, 'vol1')).lockers).toEqual([]);
    const attrs = await runOk('rados', ['-c', conf, '-p', 'maps', '-N', ns, 'listxattr', 'vol1_lock']);
    expect(attrs.stdout).not.toContain(RECORD_XATTR);
  });

  it('a lease not renewed runs out on the OSD: the late renewal says the lock was lost; release cleans up', async () => {
    const ns = freshNamespace('lapse');
    const a = await open({ namespace: ns, identity: 'hostA_1' });
    await a.acquire('v', { leaseMs: 600 });
    await new Promise((r) => setTimeout(r, 1000));
    const e = await a.renew('v').catch((x: unknown) => x);
    expect(ArchipelagoError.is(e, 'ELOCKED'), String(e)).toBe(true);
    expect((e as ArchipelagoError).details).toMatchObject({ lock: 'v', lost: true });
    expect((e as Error).message).toMatch(/lease ran out on the OSD before this renewal/);
    await a.release('v'); // its own stale record: removed, nobody fenced
    expect(await a.lockInfo('v')).toBeNull();
    expect((await a.acquire('v')).previous).toBeNull();
  });

  it('reads a lock taken without a record (an older version, `rados lock get`) as a host hold', async () => {
    const ns = freshNamespace('legacy');
    const { conf } = await ensureCluster();
    await runOk('rados', [
      '-c',
      conf,
      '-p',
      'maps',
      '-N',
      ns,
      'lock',
      'get',
      'old_lock',
      RADOS_LOCK_NAME,
      '--lock-cookie',
      'hostZ_9#0123456789abcdef',
      '--lock-description',
      'archipelago hostZ_9 on hostZ pid 1',
    ]);
    const b = await open({ namespace: ns, identity: 'hostB_2' });
    expect(await b.lockInfo('old')).toEqual({ owner: 'hostZ_9', process: null, expires: null });
    await expect(b.acquire('old')).rejects.toMatchObject({ code: 'ELOCKED', details: { owner: 'hostZ_9' } });
    expect((await b.breakLock('old')).fenced).toBe('held by the host: no process');
    expect(await b.lockInfo('old')).toBeNull();
    expect((await b.acquire('old')).took).toBe(true);
  });

  it('force-breaks another identity’s lock', async () => {
    const ns = freshNamespace('force');
    const a = await open({ namespace: ns, identity: 'hostA_1' });
    const b = await open({ namespace: ns, identity: 'hostB_2' });
    await a.acquire('f');
    await b.release('f', { force: true });
    expect(await b.lockOwner('f')).toBeNull();
    await b.acquire('f');
  });
});

describe('RADOS hash', () => {
  it('names the block by the SHA-256 of its zero-stripped bytes and stores it exclusively', async () => {
    const b = await open({ namespace: freshNamespace('hash'), pool: 'blocks' });
    const data = Buffer.concat([Buffer.from('hello pithos'), Buffer.alloc(100)]);
    await b.writeFull('src', data);
    const want = createHash('sha256').update('hello pithos').digest('hex');
    expect(await b.hash('src', 4096)).toBe(want);
    expect(await b.hash('src', 4096)).toBe(want); // already there: EEXIST is fine
    expect((await b.read(want, 0, 12)).toString()).toBe('hello pithos');
    expect((await b.info(want))?.size).toBe(12);
    const zero = createHash('sha256').update('').digest('hex');
    expect(await b.hash('missing', 4096)).toBe(zero);
    expect(await b.exists(zero)).toBe(false);
  });
});

describe('RADOS readInto', () => {
  it("reads into the caller's buffer: zeros past the end and for a missing object, bad input refused", async () => {
    const b = await open({ namespace: freshNamespace('into'), pool: 'blocks' });
    await b.writeFull('obj', Buffer.from('0123456789'));
    const t = Buffer.alloc(8, 0xee);
    await b.readInto('obj', 6, t);
    expect(t.equals(Buffer.from([0x36, 0x37, 0x38, 0x39, 0, 0, 0, 0]))).toBe(true);
    t.fill(0xee);
    await b.readInto('missing', 0, t);
    expect(t.every((x) => x === 0)).toBe(true);
    await expect(b.readInto('obj', -1, t)).rejects.toSatisfy((e) => ArchipelagoError.is(e, 'EINVAL'));
    await expect(b.readInto('bad/name', 0, t)).rejects.toSatisfy((e) =>
      ArchipelagoError.is(e, 'EINVAL_NAME'),
    );
    await b.close();
    await expect(b.readInto('obj', 0, t)).rejects.toSatisfy((e) => ArchipelagoError.is(e, 'ECLOSED'));
  });
});

describe('RADOS large reads', () => {
  it('reads whole and partial 4 MiB objects byte-exact, zeros past the end, each result its own memory', async () => {
    const b = await open({ namespace: freshNamespace('large'), pool: 'blocks' });
    const data = randomBytes(4 * 1024 * 1024);
    await b.writeFull('big', data);
    await b.writeFull('short', data.subarray(0, 100_000));
    for (const [off, len] of [
      [0, 4 * 1024 * 1024],
      [1024 * 1024, 1024 * 1024],
      [3 * 1024 * 1024 + 5, 128 * 1024],
    ] as const) {
      const got = await b.read('big', off, len);
      expect(got.length).toBe(len);
      expect(got.equals(data.subarray(off, off + len))).toBe(true);
    }
    const s = await b.read('short', 0, 256 * 1024);
    expect(s.subarray(0, 100_000).equals(data.subarray(0, 100_000))).toBe(true);
    expect(s.subarray(100_000).every((x) => x === 0)).toBe(true);
    expect((await b.read('short', 200_000, 65_536)).every((x) => x === 0)).toBe(true);
    expect((await b.read('nothing', 0, 65_536, { missingOk: true })).every((x) => x === 0)).toBe(true);
    const one = await b.read('big', 0, 1024 * 1024);
    one.fill(0);
    expect((await b.read('big', 0, 1024 * 1024)).equals(data.subarray(0, 1024 * 1024))).toBe(true);
  });
});

describe('RADOS connection', () => {
  it('fails with a clear ETIMEDOUT within the connect timeout when the cluster is unreachable', async () => {
    const conf = join(tmpdir(), `archip-unreachable-${process.pid}.conf`);
    await writeFile(conf, '[global]\nmon_host = v2:127.0.0.1:9\nauth_client_required = none\n');
    let ticks = 0;
    const timer = setInterval(() => ticks++, 50);
    const t0 = Date.now();
    const e = await RadosBlocker.open({ cephConf: conf, pool: 'blocks', connectTimeoutMs: 2000 }).catch(
      (x: unknown) => x,
    );
    const ms = Date.now() - t0;
    clearInterval(timer);
    expect(ArchipelagoError.is(e, 'ETIMEDOUT')).toBe(true);
    expect((e as Error).message).toMatch(/cannot reach the Ceph cluster .* within 2000 ms/);
    expect(ms).toBeLessThan(5000);
    expect(ticks).toBeGreaterThan(10); // the event loop kept running while connecting
  });

  it('names a missing pool', async () => {
    const { conf } = await ensureCluster();
    const e = await RadosBlocker.open({ cephConf: conf, pool: 'no-such-pool' }).catch((x: unknown) => x);
    expect(ArchipelagoError.is(e, 'EINVAL_CONFIG')).toBe(true);
    expect((e as Error).message).toContain('"no-such-pool" does not exist');
  });

  it('has the "not built" message for machines without librados-dev', () => {
    expect(NOT_BUILT_MESSAGE).toBe('RADOS support was not built: install librados-dev and rebuild');
  });
});
