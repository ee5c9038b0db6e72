/**
 * Loads the native librados binding (build/Release/archip_rados.node) and describes its shape.
 * Nothing here is public API: RadosBlocker keeps the native handles behind a Symbol.
 */
import { createRequire } from 'node:module';
import { ArchipelagoError } from '@archipelago/libxseg';

/** An Error from the binding: `errno` is positive, `syscall` names the librados call. */
export interface NativeError extends Error {
  errno?: number;
  syscall?: string;
}

/** One step of a compound object op (Pool.writeOp / readOp), in order; `failOk`: may fail alone. */
export type NativeStep = (
  | { kind: 'cmpxattr'; name: string; value: Uint8Array }
  | { kind: 'setxattr'; name: string; value: Uint8Array }
  | { kind: 'rmxattr'; name: string }
  | { kind: 'exec'; cls: string; method: string; input: Uint8Array }
  | { kind: 'create'; exclusive: boolean }
  | { kind: 'getxattrs' }
) & { failOk?: boolean };

/**
 * What a compound op did: `rc` >= 0 when it was applied, else the negative errno (ECANCELED: a
 * cmpxattr did not match; ENOENT: no such object); `prvals[i]`, step i's own result (exec and
 * getxattrs: the failing exec says which); `results[i]`, an exec's output or a getxattrs' values.
 */
export interface NativeOpResult {
  rc: number;
  prvals: number[];
  results: Array<Buffer | Record<string, Buffer> | null>;
}

export interface NativePool {
  read(oid: string, buf: Uint8Array, offset: number): Promise<number>;
  write(oid: string, buf: Uint8Array, offset: number): Promise<void>;
  writeFull(oid: string, buf: Uint8Array): Promise<void>;
  /** One compound write op: the extents applied in order, all or none (each buffer copied at once). */
  writeExtents(oid: string, bufs: Uint8Array[], offsets: number[]): Promise<void>;
  create(oid: string, exclusive: boolean, buf?: Uint8Array): Promise<void>;
  remove(oid: string): Promise<void>;
  stat(oid: string): Promise<{ size: number; mtime: number }>;
  /** One rados_write_op_t (cmpxattr, setxattr, rmxattr, exec, create), all or nothing. */
  writeOp(oid: string, steps: NativeStep[]): Promise<NativeOpResult>;
  /** One rados_read_op_t (cmpxattr, exec, getxattrs): one snapshot of the object. */
  readOp(oid: string, steps: NativeStep[]): Promise<NativeOpResult>;
  /**
   * rados_watch2 on `oid`: `onEvent(undefined, payload)` on every notify (acknowledged already;
   * an empty Buffer when it had none), `onEvent(-errno)` when the watch broke (unwatch it and
   * watch again). Resolves with the watch's id, or null when the pool was closed meanwhile.
   * The watch does not keep the process alive.
   */
  watch(oid: string, onEvent: (err?: number, payload?: Buffer) => void): Promise<number | null>;
  /** Ends a watch: no `onEvent` of it runs once this resolves. */
  unwatch(id: number): Promise<void>;
  /**
   * rados_notify2 with `payload` (default none): resolves once every watcher acknowledged it or
   * after `timeoutMs`; false when the object does not exist.
   */
  notify(oid: string, timeoutMs: number, payload?: Uint8Array): Promise<boolean>;
  listOpen(): number;
  listNext(id: number, max: number, prefix: string): Promise<{ names: string[]; done: boolean }>;
  listClose(id: number): void;
  close(): Promise<void>;
  pending(): number;
}

export interface NativeCluster {
  connect(opts: {
    id?: string;
    conf?: string;
    keyring?: string;
    options?: Record<string, string>;
  }): Promise<void>;
  openPool(name: string, namespace?: string): Promise<NativePool>;
  shutdown(): Promise<void>;
  instanceId(): string | null;
  /** This client's address, e.g. `127.0.0.1:0/850420696` (rados_getaddrs): what fencing blocklists. */
  addrs(): string | null;
  /** `osd blocklist add <addr>` for `expireSeconds` (0: the cluster's default, an hour). */
  blocklistAdd(addr: string, expireSeconds: number): Promise<void>;
  /** Resolves once the client has the monitors' latest OSD map (tests: after `ceph osd pause`). */
  waitForLatestOsdmap(): Promise<void>;
}

export interface NativeBinding {
  Cluster: new () => NativeCluster;
  librados: [number, number, number];
}

export const NOT_BUILT_MESSAGE = 'RADOS support was not built: install librados-dev and rebuild';

let cached: { binding: NativeBinding } | { error: unknown } | undefined;

/** The binding, or null when it was not built (no librados headers at build time). */
export function tryLoadBinding(): NativeBinding | null {
  if (cached === undefined) {
    try {
      // src/ and dist/ both sit one level below the package root.
      const require = createRequire(import.meta.url);
      cached = { binding: require('../build/Release/archip_rados.node') as NativeBinding };
    } catch (error) {
      cached = { error };
    }
  }
  return 'binding' in cached ? cached.binding : null;
}

/** The binding, or ENOTSUP with the "install librados-dev and rebuild" message. */
export function loadBinding(): NativeBinding {
  const b = tryLoadBinding();
  if (b) return b;
  const cause = cached && 'error' in cached ? cached.error : undefined;
  throw new ArchipelagoError('ENOTSUP', NOT_BUILT_MESSAGE, { cause });
}

/** True when the native binding is available. */
export function radosAvailable(): boolean {
  return tryLoadBinding() !== null;
}
