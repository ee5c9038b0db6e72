/**
 * cephx on the test cluster (scripts/ceph-cluster.sh runs with cephx by default): a client key
 * made here with `ceph auth get-or-create`, given to RadosBlocker as `cephxId` + `keyring`; and
 * the ways it can be wrong (bad key, unknown client, missing keyring, caps that miss a pool), each
 * a clear EINVAL_CONFIG well inside the connect timeout, never a hang.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArchipelagoError } from '@archipelago/libxseg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RadosBlocker, type RadosBlockerOptions } from '../src/index.js';
import { ensureCluster, freshNamespace } from './cluster.js';
import { removeBlocklisted, startHolder, stopHolders } from './holder.js';
import { runOk } from './run.js';

let conf: string;
let dir: string;
let keyring: string;
let id: string;

/** A cephx secret in Ceph's base64 form (type AES, created now, 16 random bytes): valid, but not the client's. */
function randomSecret(): string {
  const b = Buffer.alloc(12 + 16);
  b.writeUInt16LE(1, 0);
  b.writeUInt32LE(Math.floor(Date.now() / 1000), 2);
  b.writeUInt32LE(0, 6);
  b.writeUInt16LE(16, 10);
  randomBytes(16).copy(b, 12);
  return b.toString('base64');
}

async function failure(o: Partial<RadosBlockerOptions>): Promise<{ e: unknown; ms: number }> {
  const t0 = Date.now();
  const e = await RadosBlocker.open({ cephConf: conf, pool: 'blocks', connectTimeoutMs: 10_000, ...o }).then(
    async (b) => {
      await b.close();
      return new Error('connected');
    },
    (x: unknown) => x,
  );
  return { e, ms: Date.now() - t0 };
}

/** A blocker on pool "blocks", namespace `ns`, as client.<id> (caps: mon 'allow r', osd on "blocks"). */
function openAs(ns: string): Promise<RadosBlocker> {
  return RadosBlocker.open({ cephConf: conf, pool: 'blocks', namespace: ns, cephxId: id, keyring });
}

beforeAll(async () => {
  conf = (await ensureCluster()).conf;
  dir = await mkdtemp(join(tmpdir(), 'archip-cephx-'));
  id = `archtest-${process.pid}-${randomBytes(3).toString('hex')}`;
  keyring = join(dir, `ceph.client.${id}.keyring`);
  // Read-write on the blocks pool only, as an operator would give a blocker role.
  await runOk('ceph', [
    '-c',
    conf,
    'auth',
    'get-or-create',
    `client.${id}`,
    'mon',
    'allow r',
    'osd',
    'allow rwx pool=blocks',
    '-o',
    keyring,
  ]);
});

afterAll(async () => {
  if (conf && id) await runOk('ceph', ['-c', conf, 'auth', 'rm', `client.${id}`]).catch(() => {});
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('cephx', () => {
  it('the test cluster requires cephx', async () => {
    const text = await readFile(conf, 'utf8');
    expect(text).toMatch(/^auth_client_required = cephx$/m);
    expect(text).toMatch(/^auth_service_required = cephx$/m);
  });

  it('connects with a client id and its own keyring; the object is really there', async () => {
    const ns = freshNamespace('cephx');
    const b = await openAs(ns);
    try {
      expect(b.cephxId).toBe(id);
      await b.writeFull('obj1', Buffer.from('written by a cephx client'));
      expect((await b.read('obj1', 0, 25)).toString()).toBe('written by a cephx client');
      await b.acquire('vol');
      expect(await b.lockOwner('vol')).toBe(b.identity);
      await b.release('vol');
    } finally {
      await b.close();
    }
    // client.admin (the keyring named in ceph.conf) sees what client.<id> wrote.
    const r = await runOk('rados', ['-c', conf, '-p', 'blocks', '-N', ns, 'stat', 'obj1']);
    expect(r.stdout).toMatch(/size 25/);
  });

  it('a wrong key is refused at once with EINVAL_CONFIG (EACCES), not a hang', async () => {
    const bad = join(dir, 'wrong.keyring');
    await writeFile(bad, `[client.${id}]\n\tkey = ${randomSecret()}\n`);
    const { e, ms } = await failure({ cephxId: id, keyring: bad });
    expect(ArchipelagoError.is(e, 'EINVAL_CONFIG'), String(e)).toBe(true);
    const err = e as ArchipelagoError;
    expect(err.message).toContain(`refused client.${id}`);
    expect(err.message).toContain('cephx authentication failed');
    expect(err.details).toMatchObject({ errno: 13, cephxId: id, keyring: bad });
    expect(ms).toBeLessThan(5000);
  });

  it('an unknown client id is refused the same way', async () => {
    const { e, ms } = await failure({ cephxId: `nobody-${process.pid}`, keyring });
    expect(ArchipelagoError.is(e, 'EINVAL_CONFIG'), String(e)).toBe(true);
    expect((e as Error).message).toContain(`refused client.nobody-${process.pid}`);
    expect(ms).toBeLessThan(5000);
  });

  it('a missing keyring file is named', async () => {
    const missing = join(dir, 'no-such.keyring');
    const { e } = await failure({ cephxId: id, keyring: missing });
    expect(ArchipelagoError.is(e, 'EINVAL_CONFIG'), String(e)).toBe(true);
    expect((e as Error).message).toContain(`cannot read the keyring ${missing}`);
  });

  it('caps that do not cover the pool give EINVAL_CONFIG naming the caps, on the first I/O', async () => {
    // client.<id> may use "blocks" only; "maps" opens (pool ids are public) but every op is denied.
    const b = await RadosBlocker.open({
      cephConf: conf,
      pool: 'maps',
      namespace: freshNamespace('caps'),
      cephxId: id,
      keyring,
    });
    try {
      const e = await b.writeFull('x', Buffer.from('no')).catch((x: unknown) => x);
      expect(ArchipelagoError.is(e, 'EINVAL_CONFIG'), String(e)).toBe(true);
      expect((e as Error).message).toContain('lacks OSD caps');
      expect((e as ArchipelagoError).details).toMatchObject({ errno: 1 });
    } finally {
      await b.close();
    }
  });

  it('fencing needs the mon cap "osd blocklist": without it a break is refused and the lock kept', async () => {
    const ns = freshNamespace('fence-caps');
    // The holder: a process of its own (its own client and address), holding as if on another
    // host, writing a counter into vol_data.
    const holder = await startHolder({
      pool: 'blocks',
      namespace: ns,
      volume: 'vol',
      leaseMs: 60_000,
      host: 'elsewhere',
    });
    const addr = holder.ready.addr as string;
    try {
      const plain = await openAs(ns);
      try {
        const e = await plain.breakLock('vol').catch((x: unknown) => x);
        expect(ArchipelagoError.is(e, 'EINVAL_CONFIG'), String(e)).toBe(true);
        expect((e as Error).message).toContain(
          `refused client.${id} the command "osd blocklist add ${addr}"`,
        );
        expect((e as Error).message).toContain(`allow command "osd blocklist"`);
        expect((e as ArchipelagoError).details).toMatchObject({ lock: 'vol', addr, errno: 13 });
        expect(await plain.lockInfo('vol')).toMatchObject({
          owner: 'holder_1',
          process: { host: 'elsewhere' },
        });
      } finally {
        await plain.close();
      }
      const from = holder.events.length;
      await holder.next((x) => x.event === 'wrote', from); // still writing

      // A client with the cap may fence: the break blocklists the holder, whose writes then fail.
      const fencerId = `${id}-fencer`;
      const fencerKeyring = join(dir, `ceph.client.${fencerId}.keyring`);
      const caps = ['mon', 'allow r, allow command "osd blocklist"', 'osd', 'allow rwx pool=blocks'];
      await runOk('ceph', [
        '-c',
        conf,
        'auth',
        'get-or-create',
        `client.${fencerId}`,
        ...caps,
        '-o',
        fencerKeyring,
      ]);
      const fencer = await RadosBlocker.open({
        cephConf: conf,
        pool: 'blocks',
        namespace: ns,
        cephxId: fencerId,
        keyring: fencerKeyring,
        blocklistExpireSeconds: 600,
      });
      try {
        expect((await fencer.breakLock('vol')).fenced).toBe(`blocklisted ${addr}`);
        const after = holder.events.length;
        expect(await holder.next((x) => x.event === 'write-failed', after)).toMatchObject({
          code: 'EIO',
          fenced: true,
        });
      } finally {
        await fencer.close();
        await runOk('ceph', ['-c', conf, 'auth', 'rm', `client.${fencerId}`]);
      }
    } finally {
      stopHolders();
      await removeBlocklisted();
    }
  });
});
