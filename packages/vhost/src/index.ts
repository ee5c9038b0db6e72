/**
 * A vhost-user-blk back-end: serves a block device (an Archipelago volume, through the composer's
 * method shapes) to qemu's `vhost-user-blk-pci` over a unix socket.
 *
 * The vhost-user protocol (feature negotiation, the memory table and the eventfds passed as file
 * descriptors, which Node cannot receive) and the split virtqueues live in a small native addon
 * (native/vhost.cc), on the Node event loop. It checks every descriptor chain (addresses inside the
 * guest's memory, chains bounded, sizes bounded) and answers malformed ones with
 * VIRTIO_BLK_S_IOERR itself; the others reach `backend` with Buffers that view guest memory, so
 * guest data is copied once, between guest memory and the blocker.
 */
import { existsSync } from 'node:fs';
import { lstat, unlink } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** The volume I/O the device needs (the composer's shapes, bound to one volume). */
export interface VhostBlkBackend {
  /** Reads `out.length` bytes at `offset` into `out`. */
  readInto(offset: number, out: Buffer): Promise<unknown>;
  write(offset: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;
  trim(offset: number, length: number): Promise<void>;
  writeZeroes(offset: number, length: number, opts: { noHole: boolean }): Promise<void>;
}

export interface VhostUserBlkOptions {
  /** The unix socket to listen on (a stale socket file there is replaced). */
  path: string;
  /** Device size in bytes (rounded down to 512-byte sectors). */
  size: number;
  readonly: boolean;
  /** The most queues the front-end may use (qemu's `num-queues`); default 1. */
  queues?: number;
  /** Discard alignment in bytes (the volume's block size); default 4 MiB. */
  discardAlignment?: number;
  /** What GET_ID answers (up to 20 bytes). */
  serial?: string;
  /** The largest request in bytes; larger ones get VIRTIO_BLK_S_IOERR. Default 32 MiB. */
  maxBytes?: number;
  backend: VhostBlkBackend;
  logger?: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
}

export interface VhostStats {
  connected: boolean;
  connections: number;
  requests: number;
  badRequests: number;
  inflight: number;
  /** Wake-ups by a kick (the guest's notification of new requests). */
  kicks: number;
  /** Notifications sent to the guest (call eventfd writes). */
  notifications: number;
}

/** virtio-blk request types and status values (virtio 1.1, 5.2.6). */
export const VIRTIO_BLK = {
  T_IN: 0,
  T_OUT: 1,
  T_FLUSH: 4,
  T_GET_ID: 8,
  T_DISCARD: 11,
  T_WRITE_ZEROES: 13,
  S_OK: 0,
  S_IOERR: 1,
  S_UNSUPP: 2,
} as const;

interface NativeDevice {
  listen(): number;
  complete(tag: number, status: number): boolean;
  close(): void;
  stats(): VhostStats;
}
interface Native {
  Device: new (opts: {
    path: string;
    capacity: number;
    blockSize: number;
    discardAlignment: number;
    readonly: boolean;
    queues: number;
    serial: string;
    maxBytes: number;
    onRequest: (tag: number, type: number, sector: number, bufs: Buffer[], queue: number) => void;
    onLog: (text: string) => void;
  }) => NativeDevice;
  VERSION: number;
}

function load(): Native | null {
  if (process.platform !== 'linux') return null;
  const p = fileURLToPath(new URL('../build/Release/vhost.node', import.meta.url));
  if (!existsSync(p)) return null;
  try {
    return createRequire(import.meta.url)(p) as Native;
  } catch {
    return null;
  }
}

const native = load();

/** Whether the addon is built (vhost-user endpoints need it). */
export function available(): boolean {
  return native !== null;
}

const SECTOR = 512;
/** Requests whose pieces average less than this go to the backend in one call, through a copy. */
const BOUNCE_BELOW = 64 * 1024;

/** Reused bounce buffers, by power-of-two size class; at most 64 MiB kept. */
class BouncePool {
  private readonly free = new Map<number, Buffer[]>();
  private kept = 0;

  acquire(bytes: number): Buffer {
    const size = Math.max(4096, 2 ** Math.ceil(Math.log2(bytes)));
    const buf = this.free.get(size)?.pop();
    if (!buf) return Buffer.allocUnsafeSlow(size);
    this.kept -= size;
    return buf;
  }

  release(buf: Buffer): void {
    if (this.kept + buf.length > 64 << 20) return;
    this.kept += buf.length;
    const list = this.free.get(buf.length);
    if (list) list.push(buf);
    else this.free.set(buf.length, [buf]);
  }
}

export class VhostUserBlkServer {
  private dev: NativeDevice | null = null;
  private readonly bounce = new BouncePool();
  private inflight = 0;
  private drained: (() => void) | null = null;
  private readonly capacity: number;

  constructor(private readonly opts: VhostUserBlkOptions) {
    this.capacity = Math.floor(opts.size / SECTOR);
  }

  /** Listens on `opts.path`; resolves once the socket accepts connections. */
  async listen(): Promise<void> {
    if (!native) {
      throw Object.assign(
        new Error('the vhost-user addon is not built (packages/vhost: node scripts/build.mjs)'),
        {
          code: 'ENOTSUP',
        },
      );
    }
    const o = this.opts;
    try {
      if ((await lstat(o.path)).isSocket()) await unlink(o.path);
    } catch {
      // nothing there
    }
    const log = o.logger;
    this.dev = new native.Device({
      path: o.path,
      capacity: this.capacity,
      blockSize: SECTOR,
      discardAlignment: Math.max(1, Math.floor((o.discardAlignment ?? 4 << 20) / SECTOR)),
      readonly: o.readonly,
      queues: Math.max(1, Math.min(64, o.queues ?? 1)),
      serial: (o.serial ?? '').slice(0, 20),
      maxBytes: o.maxBytes ?? 32 << 20,
      onRequest: (tag, type, sector, bufs) => this.request(tag, type, sector, bufs),
      onLog: (text) => log?.info({ socket: o.path }, `vhost-user: ${text}`),
    });
    const r = this.dev.listen();
    if (r < 0) {
      this.dev = null;
      throw Object.assign(new Error(`cannot listen on ${o.path}: errno ${-r}`), {
        code: 'EADDRINUSE',
        errno: r,
      });
    }
  }

  stats(): VhostStats {
    return this.dev
      ? this.dev.stats()
      : {
          connected: false,
          connections: 0,
          requests: 0,
          badRequests: 0,
          inflight: 0,
          kicks: 0,
          notifications: 0,
        };
  }

  /** Stops listening, drops the front-end, and waits for the requests in flight. */
  async close(): Promise<void> {
    const dev = this.dev;
    if (!dev) return;
    this.dev = null;
    dev.close();
    if (this.inflight > 0) await new Promise<void>((r) => (this.drained = r));
    try {
      await unlink(this.opts.path);
    } catch {
      // already gone
    }
  }

  private done(dev: NativeDevice, tag: number, status: number): void {
    dev.complete(tag, status);
    if (--this.inflight === 0 && this.drained) {
      this.drained();
      this.drained = null;
    }
  }

  /** One request from the addon, already checked: complete it with a virtio status. Never throws. */
  private request(tag: number, type: number, sector: number, bufs: Buffer[]): void {
    const dev = this.dev;
    if (!dev) return;
    this.inflight++;
    const ok = () => this.done(dev, tag, VIRTIO_BLK.S_OK);
    const fail = (e: unknown) => {
      this.opts.logger?.warn({ err: String(e), type, sector }, 'vhost-user request failed');
      this.done(dev, tag, VIRTIO_BLK.S_IOERR);
    };
    let p: Promise<unknown>;
    try {
      p = this.start(type, sector, bufs);
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(ok, fail);
  }

  private start(type: number, sector: number, bufs: Buffer[]): Promise<unknown> {
    const b = this.opts.backend;
    let off = sector * SECTOR;
    switch (type) {
      case VIRTIO_BLK.T_IN:
      case VIRTIO_BLK.T_OUT: {
        if (bufs.length === 1)
          return type === VIRTIO_BLK.T_IN ? b.readInto(off, bufs[0]!) : b.write(off, bufs[0]!);
        let total = 0;
        for (const buf of bufs) total += buf.length;
        if (total / bufs.length < BOUNCE_BELOW) {
          // Many small pieces (a guest's scattered 4 KiB pages): one backend call through a bounce
          // buffer costs far less than a call per piece (measured: bench/vhost, 1 MiB requests).
          // Bounce buffers are reused: fresh memory costs a page fault per 4 KiB on first touch
          // (a 1 MiB read: ~4 ms here, more than the read).
          const slot = this.bounce.acquire(total);
          const bounce = slot.subarray(0, total);
          const done = (r: unknown) => {
            this.bounce.release(slot);
            return r;
          };
          const fail = (e: unknown) => {
            this.bounce.release(slot);
            throw e;
          };
          if (type === VIRTIO_BLK.T_OUT) {
            let at = 0;
            for (const buf of bufs) at += buf.copy(bounce, at);
            return b.write(off, bounce).then(done, fail);
          }
          return b.readInto(off, bounce).then(() => {
            let at = 0;
            for (const buf of bufs) at += bounce.copy(buf, 0, at, at + buf.length);
            this.bounce.release(slot);
          }, fail);
        }
        const all: Promise<unknown>[] = [];
        for (const buf of bufs) {
          all.push(type === VIRTIO_BLK.T_IN ? b.readInto(off, buf) : b.write(off, buf));
          off += buf.length;
        }
        return Promise.all(all);
      }
      case VIRTIO_BLK.T_FLUSH:
        return b.flush();
      case VIRTIO_BLK.T_DISCARD:
      case VIRTIO_BLK.T_WRITE_ZEROES: {
        // Segments of 16 bytes: u64 sector, u32 num_sectors, u32 flags (bit 0: unmap).
        const segs = bufs.length === 1 ? bufs[0]! : Buffer.concat(bufs);
        const all: Promise<unknown>[] = [];
        for (let i = 0; i + 16 <= segs.length; i += 16) {
          const s = Number(segs.readBigUInt64LE(i));
          const n = segs.readUInt32LE(i + 8);
          const flags = segs.readUInt32LE(i + 12);
          if (s > this.capacity || n > this.capacity - s)
            throw new Error('discard/write-zeroes beyond the end');
          if (n === 0) continue;
          if (type === VIRTIO_BLK.T_DISCARD) all.push(b.trim(s * SECTOR, n * SECTOR));
          else all.push(b.writeZeroes(s * SECTOR, n * SECTOR, { noHole: (flags & 1) === 0 }));
        }
        return Promise.all(all);
      }
      default:
        return Promise.reject(new Error(`unexpected request type ${type}`));
    }
  }
}
