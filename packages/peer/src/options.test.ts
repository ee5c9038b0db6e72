/** checkPeerOptions for blocker peers: file_blocker and rados_blocker options, and what is refused. */
import { describe, expect, it } from 'vitest';
import { checkPeerOptions, peerEnvironment } from './options.js';

const common = {
  role: 'blockerm',
  segment: { name: 's', dynports: 16, ports: 32, sizeMiB: 8 },
  portStart: 1,
  portEnd: 1,
  nrOps: 4,
  pidfile: '/tmp/p',
  logfile: '/tmp/l',
  logLevel: 2,
};
const rados = {
  type: 'rados_blocker',
  pool: 'maps',
  namespace: 'ns-1',
  cephConf: '/etc/ceph/ceph.conf',
  cephxId: 'archip',
  keyring: '/etc/ceph/ceph.client.archip.keyring',
  connectTimeoutMs: 5000,
  opTimeoutMs: 0,
  sync: 'flush',
  identity: 'host1_blockerm',
};

describe('checkPeerOptions: file_blocker sync', () => {
  it('takes sync always or flush, and names the key when it is anything else', () => {
    const fb = { type: 'file_blocker', dir: '/var/lib/archip/blocks' };
    expect(checkPeerOptions({ ...common, blocker: { ...fb, sync: 'flush' } }).blocker).toEqual({
      ...fb,
      sync: 'flush',
    });
    expect(() => checkPeerOptions({ ...common, blocker: { ...fb, sync: 'later' } })).toThrow(
      /"sync" must be "always" or "flush", got "later"/,
    );
  });
});

describe('checkPeerOptions: rados_blocker', () => {
  it('accepts every key the configuration maps to, and a pool alone', () => {
    expect(checkPeerOptions({ ...common, blocker: rados }).blocker).toEqual(rados);
    expect(
      checkPeerOptions({ ...common, blocker: { type: 'rados_blocker', pool: 'blocks' } }).blocker,
    ).toEqual({
      type: 'rados_blocker',
      pool: 'blocks',
    });
    expect(checkPeerOptions({ ...common, blocker: { ...rados, namespace: '' } }).blocker).toMatchObject({
      namespace: '',
    });
  });

  it('refuses bad values with EINVAL_CONFIG naming the key', () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ pool: undefined }, /"pool" must be a non-empty string/],
      [{ pool: '' }, /"pool" must be a non-empty string/],
      [{ pool: 7 }, /"pool" must be a non-empty string/],
      [{ namespace: 'x'.repeat(65) }, /"namespace" must be 0..64 characters/],
      [{ namespace: 'a b' }, /"namespace" must be 0..64 characters/],
      [{ cephConf: 'ceph.conf' }, /"cephConf" must be an absolute path, got "ceph.conf"/],
      [{ cephConf: '' }, /"cephConf" must be a non-empty string/],
      [{ keyring: 'k' }, /"keyring" must be an absolute path/],
      [{ cephxId: 'client.admin x' }, /"cephxId" must be a client id like "admin"/],
      [{ connectTimeoutMs: 0 }, /"connectTimeoutMs" must be an integer in 1..3600000, got 0/],
      [{ connectTimeoutMs: '10' }, /"connectTimeoutMs" must be an integer/],
      [{ opTimeoutMs: -1 }, /"opTimeoutMs" must be an integer in 0..86400000/],
      [{ opTimeoutMs: 1.5 }, /"opTimeoutMs" must be an integer/],
      [{ identity: '' }, /"identity" must be a non-empty string/],
      [{ sync: 'writeback' }, /"sync" must be "always" or "flush", got "writeback"/],
      [{ sync: true }, /"sync" must be "always" or "flush", got true/],
      [{ dir: '/srv/x' }, /rados_blocker does not take "dir"/],
    ];
    for (const [patch, msg] of cases) {
      const blocker = { ...rados, ...patch };
      let err: unknown;
      try {
        checkPeerOptions({ ...common, blocker });
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(patch)).toMatchObject({ code: 'EINVAL_CONFIG' });
      expect((err as Error).message, JSON.stringify(patch)).toMatch(/^peer options: /);
      expect((err as Error).message, JSON.stringify(patch)).toMatch(msg);
    }
  });

  it('refuses an unknown blocker type, naming the two it takes', () => {
    expect(() => checkPeerOptions({ ...common, blocker: { type: 'nfs_blocker', dir: '/x' } })).toThrow(
      /blocker "type" must be "file_blocker" or "rados_blocker", got "nfs_blocker"/,
    );
  });

  it('still checks file_blocker options', () => {
    expect(
      checkPeerOptions({ ...common, blocker: { type: 'file_blocker', dir: '/d', fdcache: 8 } }).blocker,
    ).toEqual({ type: 'file_blocker', dir: '/d', fdcache: 8 });
    expect(() => checkPeerOptions({ ...common, blocker: { type: 'file_blocker', pool: 'p' } })).toThrow(
      /"dir" must be a non-empty string/,
    );
  });
});

const FILE = { ...common, blocker: { type: 'file_blocker', dir: '/srv/blocks' } };

describe('peer options: account, umask, nr_threads', () => {
  it('checks them and passes nr_threads to the spawned process as UV_THREADPOOL_SIZE', () => {
    const o = checkPeerOptions({
      ...FILE,
      account: { user: 'archipelago', uid: 998, group: 'archipelago', gid: 997 },
      umask: 0o007,
      nrThreads: 12,
    });
    expect(o).toMatchObject({ account: { uid: 998, gid: 997 }, umask: 7, nrThreads: 12 });
    const env = peerEnvironment(o);
    expect(env.UV_THREADPOOL_SIZE).toBe('12');
    expect(JSON.parse(env.ARCHIPELAGO_PEER as string)).toEqual(o);
    expect(peerEnvironment(checkPeerOptions(FILE)).UV_THREADPOOL_SIZE).toBeUndefined();
    expect(() => checkPeerOptions({ ...FILE, nrThreads: 2000 })).toThrow(
      /"nrThreads" must be an integer in 1..1024/,
    );
    expect(() => checkPeerOptions({ ...FILE, umask: 0o1000 })).toThrow(/"umask"/);
    expect(() => checkPeerOptions({ ...FILE, account: { user: 'x', uid: -1, group: 'x', gid: 0 } })).toThrow(
      /"uid"/,
    );
  });
});
