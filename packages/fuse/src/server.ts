/**
 * A FUSE filesystem whose root is one regular file (mounted with rootmode=S_IFREG on a regular
 * file, as `qemu-storage-daemon --export fuse` does): its bytes are a `FuseFileBackend`'s.
 *
 * Requests are read from the channel by a few concurrent readers (each read blocks one libuv
 * pool thread in the kernel until a request comes) and served concurrently; replies go out in
 * completion order, matched by the kernel through their `unique`. With FOPEN_DIRECT_IO the
 * kernel keeps no page cache of the file: every read and write reaches us, so what the file
 * shows is the volume's bytes, and an fsync (or a close's FLUSH) is a flush of the volume.
 */
import { ArchipelagoError } from '@archipelago/libxseg';
import type { FuseChannel } from './channel.js';
import {
  decodeFallocate,
  decodeInit,
  decodeOpen,
  decodeRead,
  decodeRequest,
  decodeSetattr,
  decodeWrite,
  Errno,
  encodeAttr,
  encodeInit,
  encodeOpen,
  encodeStatfs,
  encodeWrite,
  errorReply,
  Falloc,
  Fattr,
  type FileAttr,
  FOPEN_DIRECT_IO,
  FOPEN_PARALLEL_DIRECT_WRITES,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_MIN_MINOR_VERSION,
  FuseProtocolError,
  type FuseRequest,
  InitFlag,
  NO_REPLY,
  Op,
  S_IFREG,
  Size,
  writeOutHeader,
} from './protocol.js';

/** The file's bytes: a volume, in the endpoint (any object with these methods). */
export interface FuseFileBackend {
  /** Size in bytes (fixed while served). */
  readonly size: number;
  readonly readonly: boolean;
  /** Reads `out.length` bytes at `offset` into `out`. */
  readInto(offset: number, out: Buffer): Promise<unknown>;
  /** Writes `data` at `offset` (the buffer is the backend's to keep). */
  write(offset: number, data: Buffer): Promise<void>;
  /** Makes every write acknowledged so far durable. */
  flush(): Promise<void>;
  /** Makes a range read as zeros (fallocate PUNCH_HOLE and ZERO_RANGE). */
  writeZeroes(offset: number, length: number): Promise<void>;
}

export interface FuseLogger {
  debug(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface FuseServerOptions {
  /** Concurrent reads of the channel (default 4). */
  readers?: number;
  /** Largest WRITE the kernel may send, bytes (default 1 MiB; at most 256 pages). */
  maxWrite?: number;
  /** Owner of the file (default: this process's uid and gid). */
  uid?: number;
  gid?: number;
  logger?: FuseLogger;
}

export interface FuseServerStats {
  requests: number;
  reads: number;
  writes: number;
  flushes: number;
  errors: number;
}

/** Maps an error of the backend to the errno the file operation fails with. */
export function errnoOf(e: unknown): number {
  if (e instanceof FuseProtocolError) return Errno.EINVAL;
  if (ArchipelagoError.isInstance(e)) {
    switch (e.code) {
      case 'ENOSPC':
        return Errno.ENOSPC;
      case 'EREADONLY':
        return Errno.EROFS;
      case 'ERANGE':
      case 'EINVAL':
        return Errno.EINVAL;
      default:
        return Errno.EIO;
    }
  }
  const sys = (e as NodeJS.ErrnoException | undefined)?.code;
  if (sys === 'ENOSPC' || sys === 'EDQUOT') return Errno.ENOSPC;
  if (sys === 'EROFS') return Errno.EROFS;
  return Errno.EIO;
}

const PAGE = 4096;

export class FuseFileServer {
  readonly stats: FuseServerStats = { requests: 0, reads: 0, writes: 0, flushes: 0, errors: 0 };
  /** Resolves when the kernel ends the connection (unmount, abort) or the channel fails. */
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private readonly maxWrite: number;
  private readonly bufSize: number;
  private readonly attr: FileAttr;
  private kernelMinor = 0;
  private ended = false;
  private started = false;
  /** A write completed since the last flush began: the next flush has work to do. */
  private dirty = false;
  private readonly inflight = new Set<Promise<void>>();

  constructor(
    private readonly channel: FuseChannel,
    private readonly file: FuseFileBackend,
    private readonly opts: FuseServerOptions = {},
  ) {
    this.maxWrite = Math.min(Math.max(opts.maxWrite ?? 1 << 20, PAGE), 256 * PAGE);
    this.bufSize = this.maxWrite + PAGE; // the kernel wants room for the headers and max_write
    this.attr = {
      size: file.size,
      mode: S_IFREG | (file.readonly ? 0o400 : 0o600),
      uid: opts.uid ?? process.getuid?.() ?? 0,
      gid: opts.gid ?? process.getgid?.() ?? 0,
      blksize: PAGE,
      time: Date.now() / 1000,
    };
    this.closed = new Promise((r) => {
      this.resolveClosed = r;
    });
  }

  /** Starts reading requests. */
  start(): void {
    if (this.started) return;
    this.started = true;
    const n = Math.max(1, this.opts.readers ?? 4);
    for (let i = 0; i < n; i++) this.readNext(Buffer.allocUnsafe(this.bufSize));
  }

  /** Waits for the requests being served to be answered. */
  async drain(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    void this.drain().then(() => this.resolveClosed());
  }

  private readNext(buf: Buffer): void {
    if (this.ended) return;
    this.channel.read(buf, (err, n) => {
      if (err) {
        // ENODEV: unmounted or aborted. EINTR/EAGAIN: read again. Anything else ends us too.
        if (err.code === 'EINTR' || err.code === 'EAGAIN' || err.code === 'ENOENT') {
          this.readNext(buf);
          return;
        }
        if (err.code !== 'ENODEV')
          this.opts.logger?.warn({ err: err.message }, 'fuse: reading the channel failed');
        this.end();
        return;
      }
      if (n === 0) {
        this.end();
        return;
      }
      this.dispatch(buf, n);
      this.readNext(buf);
    });
  }

  /** Serves one request read into `buf` (the buffer is read into again once this returns). */
  dispatch(buf: Buffer, n: number): void {
    this.stats.requests++;
    let req: FuseRequest;
    try {
      req = decodeRequest(buf, n);
    } catch (e) {
      this.stats.errors++;
      const unique = e instanceof FuseProtocolError ? e.unique : null;
      this.opts.logger?.warn({ err: String(e) }, 'fuse: bad request');
      if (unique !== null) this.send(errorReply(unique, Errno.EINVAL));
      return;
    }
    if (NO_REPLY.has(req.opcode)) return;
    let work: Promise<Buffer>;
    try {
      const r = this.handle(req);
      if (Buffer.isBuffer(r)) {
        this.send(r);
        return;
      }
      work = r;
    } catch (e) {
      this.fail(req, e);
      return;
    }
    const p = work.then(
      (out) => this.send(out),
      (e: unknown) => this.fail(req, e),
    );
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  private fail(req: FuseRequest, e: unknown): void {
    this.stats.errors++;
    const errno = errnoOf(e);
    if (errno === Errno.EIO || e instanceof FuseProtocolError) {
      this.opts.logger?.warn({ opcode: req.opcode, err: String(e) }, 'fuse: request failed');
    }
    this.send(errorReply(req.unique, errno));
  }

  private send(out: Buffer): void {
    try {
      this.channel.write(out);
    } catch (e) {
      // ENOENT: the request was interrupted and is gone; ENODEV: the connection ended.
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENODEV') {
        this.opts.logger?.warn({ err: String(e) }, 'fuse: writing a reply failed');
      }
    }
  }

  /** A reply now (a Buffer) or later (a Promise of one). */
  private handle(req: FuseRequest): Buffer | Promise<Buffer> {
    const f = this.file;
    switch (req.opcode) {
      case Op.INIT:
        return this.init(req);
      case Op.GETATTR:
        return encodeAttr(req.unique, this.attr, 1);
      case Op.SETATTR:
        return this.setattr(req);
      case Op.OPEN: {
        const { flags } = decodeOpen(req);
        if (f.readonly && (flags & 3) !== 0) return errorReply(req.unique, Errno.EROFS);
        const parallel = this.kernelMinor >= 36 ? FOPEN_PARALLEL_DIRECT_WRITES : 0;
        return encodeOpen(req.unique, 0n, FOPEN_DIRECT_IO | parallel);
      }
      case Op.READ:
        return this.read(req);
      case Op.WRITE:
        return this.write(req);
      case Op.FLUSH:
      case Op.FSYNC:
      case Op.SYNCFS:
        return this.flush(req);
      case Op.RELEASE:
      case Op.ACCESS:
      case Op.DESTROY:
        return errorReply(req.unique, 0);
      case Op.STATFS:
        return encodeStatfs(req.unique, f.size, PAGE);
      case Op.FALLOCATE:
        return this.fallocate(req);
      case Op.LOOKUP:
        return errorReply(req.unique, Errno.ENOENT); // the root is a file: it has no names
      default:
        return errorReply(req.unique, Errno.ENOSYS);
    }
  }

  private init(req: FuseRequest): Buffer {
    const i = decodeInit(req);
    if (i.major !== FUSE_KERNEL_VERSION || i.minor < FUSE_MIN_MINOR_VERSION) {
      this.opts.logger?.warn(
        { major: i.major, minor: i.minor },
        'fuse: kernel protocol version not supported',
      );
      return errorReply(req.unique, Errno.EPROTO);
    }
    this.kernelMinor = Math.min(i.minor, FUSE_KERNEL_MINOR_VERSION);
    const want = InitFlag.ASYNC_READ | InitFlag.BIG_WRITES | InitFlag.ASYNC_DIO | InitFlag.MAX_PAGES;
    this.opts.logger?.debug({ minor: i.minor, flags: i.flags }, 'fuse: init');
    return encodeInit(req.unique, {
      minor: this.kernelMinor,
      maxReadahead: i.maxReadahead,
      flags: i.flags & want,
      maxBackground: 64,
      congestionThreshold: 48,
      maxWrite: this.maxWrite,
      maxPages: this.maxWrite / PAGE,
    });
  }

  private setattr(req: FuseRequest): Buffer {
    const s = decodeSetattr(req);
    if (s.valid & Fattr.SIZE && s.size !== this.file.size) {
      // A volume's size changes with "vlmc resize", not through its file.
      return errorReply(req.unique, this.file.readonly ? Errno.EROFS : Errno.EINVAL);
    }
    if (s.valid & (Fattr.MODE | Fattr.UID | Fattr.GID)) return errorReply(req.unique, Errno.EPERM);
    return encodeAttr(req.unique, this.attr, 1); // times: accepted, not kept
  }

  private async read(req: FuseRequest): Promise<Buffer> {
    const { offset, size } = decodeRead(req);
    this.stats.reads++;
    const len = Math.max(0, Math.min(size, this.file.size - offset));
    const out = Buffer.allocUnsafe(Size.OUT_HEADER + len);
    writeOutHeader(out, out.length, 0, req.unique);
    if (len > 0) await this.file.readInto(offset, out.subarray(Size.OUT_HEADER));
    return out;
  }

  private async write(req: FuseRequest): Promise<Buffer> {
    const w = decodeWrite(req);
    if (this.file.readonly) return errorReply(req.unique, Errno.EROFS);
    if (w.offset >= this.file.size && w.size > 0) return errorReply(req.unique, Errno.ENOSPC);
    const len = Math.min(w.size, this.file.size - w.offset);
    this.stats.writes++;
    // The read buffer is reused for the next request: the backend gets its own copy.
    await this.file.write(w.offset, Buffer.from(w.data.subarray(0, len)));
    this.dirty = true;
    return encodeWrite(req.unique, len);
  }

  private async flush(req: FuseRequest): Promise<Buffer> {
    if (this.file.readonly || !this.dirty) return errorReply(req.unique, 0);
    this.dirty = false; // a write completing from now on is for the next flush
    this.stats.flushes++;
    try {
      await this.file.flush();
    } catch (e) {
      this.dirty = true;
      throw e;
    }
    return errorReply(req.unique, 0);
  }

  private async fallocate(req: FuseRequest): Promise<Buffer> {
    const { offset, length, mode } = decodeFallocate(req);
    const end = offset + length;
    if (mode & ~(Falloc.KEEP_SIZE | Falloc.PUNCH_HOLE | Falloc.ZERO_RANGE)) {
      return errorReply(req.unique, Errno.EOPNOTSUPP);
    }
    if (this.file.readonly) return errorReply(req.unique, Errno.EROFS);
    if (mode & (Falloc.PUNCH_HOLE | Falloc.ZERO_RANGE)) {
      const to = Math.min(end, this.file.size);
      if (to > offset) {
        await this.file.writeZeroes(offset, to - offset);
        this.dirty = true;
      }
      return errorReply(req.unique, 0);
    }
    // Plain allocation: every byte of a volume is there already; past its end it cannot grow.
    if (end > this.file.size && !(mode & Falloc.KEEP_SIZE)) return errorReply(req.unique, Errno.EFBIG);
    return errorReply(req.unique, 0);
  }
}
