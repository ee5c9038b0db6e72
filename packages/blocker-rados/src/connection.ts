/**
 * Shared librados clients: blockers of one process that use the same ceph.conf, client id,
 * keyring, timeouts and tag share one rados_t (one set of messenger threads and one session with
 * the monitors), each with its own pool context. The client shuts down when its last user closes.
 * A `tag` of its own gives a blocker (or a group of blockers with that tag) a client of its own:
 * Ceph fences (blocklists) a client, not a volume, so a process that serves several volumes gives
 * each volume a client of its own, and a break of one volume's lock fences only that volume.
 */
import { access, constants as fsConstants } from 'node:fs/promises';
import { constants } from 'node:os';
import { ArchipelagoError } from '@archipelago/libxseg';
import { errnoOf } from './errors.js';
import { loadBinding, type NativeCluster } from './native.js';

export interface ConnectOptions {
  /** ceph.conf path; undefined = librados' default search (CEPH_CONF, /etc/ceph/ceph.conf, ...). */
  cephConf?: string;
  /** cephx client id without the "client." prefix. */
  cephxId: string;
  /** Keyring path, when not in ceph.conf. */
  keyring?: string;
  /** Give up connecting after this long (client_mount_timeout, rados_mon_op_timeout). */
  connectTimeoutMs: number;
  /** rados_osd_op_timeout; 0 = OSD operations wait for the cluster however long it takes. */
  opTimeoutMs: number;
  /**
   * Users with the same options and tag share a client; another tag is another client. Default:
   * none (every untagged user of the same options shares one).
   */
  tag?: string;
}

export interface Connection {
  cluster: NativeCluster;
  release(): Promise<void>;
}

interface Entry {
  ready: Promise<NativeCluster>;
  refs: number;
}

const clients = new Map<string, Entry>();

/** How many librados clients this process has connected (or is connecting) now. */
export function connectionCount(): number {
  return clients.size;
}
/** Addresses of this process's connected clients: fencing never blocklists one of them. */
const ownAddrs = new Set<string>();

/** True when `addr` is a librados client of this process (rados_getaddrs of one connected here). */
export function isOwnAddress(addr: string): boolean {
  return ownAddrs.has(addr);
}

function seconds(ms: number): string {
  return String(Math.max(1, Math.ceil(ms / 1000)));
}

async function connectNew(o: ConnectOptions): Promise<NativeCluster> {
  const { Cluster } = loadBinding();
  const cluster = new Cluster();
  const options: Record<string, string> = {
    client_mount_timeout: seconds(o.connectTimeoutMs),
    rados_mon_op_timeout: seconds(o.connectTimeoutMs),
    rados_osd_op_timeout: o.opTimeoutMs > 0 ? seconds(o.opTimeoutMs) : '0',
  };
  const where = o.cephConf ?? 'the default ceph.conf';
  // librados says only ENOENT for a missing conf or keyring; name the file that is missing.
  for (const [what, path] of [
    ['ceph.conf', o.cephConf],
    ['keyring', o.keyring],
  ] as const) {
    if (path !== undefined && !(await readable(path))) {
      throw new ArchipelagoError(
        'EINVAL_CONFIG',
        `cannot read the ${what} ${path}: no such file or not readable (set ${what === 'keyring' ? 'keyring' : 'ceph_conf'})`,
        {
          details: {
            cephConf: o.cephConf ?? null,
            cephxId: o.cephxId,
            [what === 'keyring' ? 'keyring' : 'cephConf']: path,
          },
        },
      );
    }
  }
  try {
    await cluster.connect({ id: o.cephxId, conf: o.cephConf, keyring: o.keyring, options });
    const addr = cluster.addrs();
    if (addr) ownAddrs.add(addr);
    return cluster;
  } catch (e) {
    await cluster.shutdown().catch(() => {});
    const errno = errnoOf(e);
    const details = { cephConf: o.cephConf ?? null, cephxId: o.cephxId, errno };
    if (errno === constants.errno.ETIMEDOUT) {
      throw new ArchipelagoError(
        'ETIMEDOUT',
        `cannot reach the Ceph cluster of ${where} within ${o.connectTimeoutMs} ms: check mon_host and that the monitors are running`,
        { cause: e, details },
      );
    }
    if (errno === constants.errno.ENOENT) {
      throw new ArchipelagoError(
        'EINVAL_CONFIG',
        o.cephConf === undefined
          ? 'found no ceph.conf (CEPH_CONF, /etc/ceph/ceph.conf) or no keyring for it: set ceph_conf and keyring'
          : `cannot connect with ${where}: librados found no keyring for client.${o.cephxId} (set keyring, or name one in ceph.conf)`,
        { cause: e, details },
      );
    }
    if (errno === constants.errno.EACCES || errno === constants.errno.EPERM) {
      throw new ArchipelagoError(
        'EINVAL_CONFIG',
        `the Ceph cluster of ${where} refused client.${o.cephxId} (cephx authentication failed: unknown client or wrong key): check cephx_id and the keyring${o.keyring ? ` ${o.keyring}` : ''}`,
        { cause: e, details: { ...details, keyring: o.keyring ?? null } },
      );
    }
    throw new ArchipelagoError(
      'EIO',
      `cannot connect to the Ceph cluster of ${where}: ${(e as Error).message}`,
      {
        cause: e,
        details,
      },
    );
  }
}

function readable(path: string): Promise<boolean> {
  return access(path, fsConstants.R_OK).then(
    () => true,
    () => false,
  );
}

/** A reference to a connected client for `o`, connecting on first use. */
export async function acquireConnection(o: ConnectOptions): Promise<Connection> {
  const key = JSON.stringify([
    o.cephConf ?? null,
    o.cephxId,
    o.keyring ?? null,
    o.connectTimeoutMs,
    o.opTimeoutMs,
    o.tag ?? null,
  ]);
  let entry = clients.get(key);
  if (!entry) {
    const ready = connectNew(o);
    entry = { ready, refs: 0 };
    clients.set(key, entry);
    ready.catch(() => {
      if (clients.get(key) === entry) clients.delete(key);
    });
  }
  entry.refs++;
  const e = entry;
  let cluster: NativeCluster;
  try {
    cluster = await e.ready;
  } catch (err) {
    e.refs--;
    throw err;
  }
  let released = false;
  return {
    cluster,
    release: async () => {
      if (released) return;
      released = true;
      if (--e.refs === 0) {
        if (clients.get(key) === e) clients.delete(key);
        const addr = cluster.addrs();
        await cluster.shutdown();
        if (addr) ownAddrs.delete(addr);
      }
    },
  };
}
