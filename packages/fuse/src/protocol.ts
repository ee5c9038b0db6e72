/**
 * The FUSE kernel protocol, the part a one-file filesystem needs: the numbers and layouts of
 * <linux/fuse.h> (protocol 7.x), and the codecs of the requests we read and the replies we write.
 * All integers are little-endian (the host order on the machines we run on).
 */

/** Protocol major version; the kernel and we must agree on it. */
export const FUSE_KERNEL_VERSION = 7;
/** The minor version we speak (7.38, Linux 6.2+); older kernels get their own minor back. */
export const FUSE_KERNEL_MINOR_VERSION = 38;
/** The oldest minor we accept: 7.23 (Linux 3.15) has the 64-byte INIT reply and time_gran. */
export const FUSE_MIN_MINOR_VERSION = 23;
/** The root inode: our one file. */
export const FUSE_ROOT_ID = 1n;

export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  ACCESS: 34,
  INTERRUPT: 36,
  DESTROY: 38,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  LSEEK: 46,
  SYNCFS: 50,
} as const;

/** Requests the kernel expects no reply to. */
export const NO_REPLY: ReadonlySet<number> = new Set([Op.FORGET, Op.BATCH_FORGET, Op.INTERRUPT]);

/** INIT flags (fuse_init_in.flags / fuse_init_out.flags). */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  BIG_WRITES: 1 << 5,
  ASYNC_DIO: 1 << 15,
  MAX_PAGES: 1 << 22,
} as const;

/** fuse_open_out.open_flags. */
export const FOPEN_DIRECT_IO = 1 << 0;
/** Concurrent direct writes on one inode (7.36+): the kernel does not serialize them. */
export const FOPEN_PARALLEL_DIRECT_WRITES = 1 << 6;

/** fuse_setattr_in.valid bits (FATTR_*). */
export const Fattr = { MODE: 1 << 0, UID: 1 << 1, GID: 1 << 2, SIZE: 1 << 3 } as const;

/** fallocate(2) modes (FALLOC_FL_*). */
export const Falloc = { KEEP_SIZE: 0x01, PUNCH_HOLE: 0x02, ZERO_RANGE: 0x10 } as const;

/** Linux errno values replies carry (negated in the header). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EINVAL: 22,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  ENOSYS: 38,
  EPROTO: 71,
  EOPNOTSUPP: 95,
} as const;

/**
 * Sizes of the structures: fuse_in_header, fuse_out_header, fuse_write_in (7.9+; the data
 * follows it), fuse_attr, fuse_init_out (7.23+).
 */
export const Size = { IN_HEADER: 40, OUT_HEADER: 16, WRITE_IN: 40, ATTR: 88, INIT_OUT: 64 } as const;

/**
 * A request as read from /dev/fuse: what it asks, its id, and its body (a view of the read
 * buffer). The header's nodeid (always the root here), uid, gid and pid are not needed: the
 * kernel checks permissions (default_permissions).
 */
export interface FuseRequest {
  opcode: number;
  unique: bigint;
  body: Buffer;
}

/**
 * Decodes a request of `n` bytes at the start of `buf`. Throws `FuseProtocolError` for a request
 * shorter than its header or whose length field disagrees with what was read (the kernel never
 * sends one: a broken channel); the request's `unique` is kept when it could be read, so that it
 * can still be answered.
 */
export function decodeRequest(buf: Buffer, n: number): FuseRequest {
  if (n < Size.IN_HEADER) {
    throw new FuseProtocolError(
      `request of ${n} bytes is shorter than its ${Size.IN_HEADER}-byte header`,
      n >= 16 ? buf.readBigUInt64LE(8) : null,
    );
  }
  const len = buf.readUInt32LE(0);
  const unique = buf.readBigUInt64LE(8);
  if (len !== n) throw new FuseProtocolError(`request says ${len} bytes, ${n} were read`, unique);
  return {
    opcode: buf.readUInt32LE(4),
    unique,
    body: buf.subarray(Size.IN_HEADER, n),
  };
}

/** A request the server cannot decode; answered with EINVAL where its `unique` is known. */
export class FuseProtocolError extends Error {
  constructor(
    message: string,
    readonly unique: bigint | null,
  ) {
    super(message);
  }
}

/** Checks that a request body holds at least the `size` bytes its structure needs. */
export function needBody(req: FuseRequest, size: number, what: string): void {
  if (req.body.length < size) {
    throw new FuseProtocolError(`${what} body is ${req.body.length} bytes, needs ${size}`, req.unique);
  }
}

/** Writes a reply header at `out[0..16)`: total length, error (0 or a positive errno), unique. */
export function writeOutHeader(out: Buffer, len: number, errno: number, unique: bigint): void {
  out.writeUInt32LE(len, 0);
  out.writeInt32LE(errno === 0 ? 0 : -errno, 4);
  out.writeBigUInt64LE(unique, 8);
}

/** A reply carrying only an error (or success with no payload). */
export function errorReply(unique: bigint, errno: number): Buffer {
  const out = Buffer.alloc(Size.OUT_HEADER);
  writeOutHeader(out, Size.OUT_HEADER, errno, unique);
  return out;
}

/** A reply with `payloadSize` bytes of payload, zeroed, header filled in. */
export function replyBuffer(unique: bigint, payloadSize: number): Buffer {
  const out = Buffer.alloc(Size.OUT_HEADER + payloadSize);
  writeOutHeader(out, out.length, 0, unique);
  return out;
}

/** fuse_init_in: the kernel's protocol version, readahead and the flags it offers. */
export function decodeInit(req: FuseRequest): {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
} {
  needBody(req, 16, 'INIT');
  const b = req.body;
  return {
    major: b.readUInt32LE(0),
    minor: b.readUInt32LE(4),
    maxReadahead: b.readUInt32LE(8),
    flags: b.readUInt32LE(12),
  };
}

export interface InitOut {
  minor: number;
  maxReadahead: number;
  flags: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  maxPages: number;
}

export function encodeInit(unique: bigint, o: InitOut): Buffer {
  const out = replyBuffer(unique, Size.INIT_OUT);
  const p = Size.OUT_HEADER;
  out.writeUInt32LE(FUSE_KERNEL_VERSION, p);
  out.writeUInt32LE(o.minor, p + 4);
  out.writeUInt32LE(o.maxReadahead, p + 8);
  out.writeUInt32LE(o.flags >>> 0, p + 12);
  out.writeUInt16LE(o.maxBackground, p + 16);
  out.writeUInt16LE(o.congestionThreshold, p + 18);
  out.writeUInt32LE(o.maxWrite, p + 20);
  out.writeUInt32LE(1, p + 24); // time_gran: 1 ns
  out.writeUInt16LE(o.maxPages, p + 28);
  return out;
}

/** What GETATTR and SETATTR report of the file. */
export interface FileAttr {
  size: number;
  /** st_mode, type bits included (S_IFREG | permissions). */
  mode: number;
  uid: number;
  gid: number;
  blksize: number;
  /** Seconds since the epoch, for atime, mtime and ctime alike. */
  time: number;
}

export const S_IFREG = 0o100000;

function writeAttr(out: Buffer, p: number, a: FileAttr): void {
  out.writeBigUInt64LE(FUSE_ROOT_ID, p); // ino
  out.writeBigUInt64LE(BigInt(a.size), p + 8);
  out.writeBigUInt64LE(BigInt(Math.ceil(a.size / 512)), p + 16); // blocks of 512 bytes
  const t = BigInt(Math.floor(a.time));
  out.writeBigUInt64LE(t, p + 24);
  out.writeBigUInt64LE(t, p + 32);
  out.writeBigUInt64LE(t, p + 40);
  out.writeUInt32LE(a.mode, p + 60);
  out.writeUInt32LE(1, p + 64); // nlink
  out.writeUInt32LE(a.uid, p + 68);
  out.writeUInt32LE(a.gid, p + 72);
  out.writeUInt32LE(a.blksize, p + 80);
}

/** fuse_attr_out: attributes valid for `validSec` seconds. */
export function encodeAttr(unique: bigint, a: FileAttr, validSec: number): Buffer {
  const out = replyBuffer(unique, 16 + Size.ATTR);
  out.writeBigUInt64LE(BigInt(validSec), Size.OUT_HEADER);
  writeAttr(out, Size.OUT_HEADER + 16, a);
  return out;
}

/** fuse_setattr_in: which attributes change (`valid`, Fattr bits) and the new size. */
export function decodeSetattr(req: FuseRequest): { valid: number; size: number } {
  needBody(req, 88, 'SETATTR');
  return { valid: req.body.readUInt32LE(0), size: Number(req.body.readBigUInt64LE(16)) };
}

export function decodeOpen(req: FuseRequest): { flags: number } {
  needBody(req, 8, 'OPEN');
  return { flags: req.body.readUInt32LE(0) };
}

export function encodeOpen(unique: bigint, fh: bigint, openFlags: number): Buffer {
  const out = replyBuffer(unique, 16);
  out.writeBigUInt64LE(fh, Size.OUT_HEADER);
  out.writeUInt32LE(openFlags, Size.OUT_HEADER + 8);
  return out;
}

/** fuse_read_in and fuse_write_in share their first fields: fh, offset, size. */
export interface IoIn {
  offset: number;
  size: number;
}

export function decodeRead(req: FuseRequest): IoIn {
  needBody(req, 24, 'READ');
  return { offset: Number(req.body.readBigUInt64LE(8)), size: req.body.readUInt32LE(16) };
}

/** WRITE: offset and size, and the data (a view of the read buffer: copy it to keep it). */
export function decodeWrite(req: FuseRequest): IoIn & { data: Buffer } {
  needBody(req, Size.WRITE_IN, 'WRITE');
  const size = req.body.readUInt32LE(16);
  if (req.body.length !== Size.WRITE_IN + size) {
    throw new FuseProtocolError(
      `WRITE of ${size} bytes carries ${req.body.length - Size.WRITE_IN}`,
      req.unique,
    );
  }
  return {
    offset: Number(req.body.readBigUInt64LE(8)),
    size,
    data: req.body.subarray(Size.WRITE_IN),
  };
}

export function encodeWrite(unique: bigint, size: number): Buffer {
  const out = replyBuffer(unique, 8);
  out.writeUInt32LE(size, Size.OUT_HEADER);
  return out;
}

export function decodeFallocate(req: FuseRequest): { offset: number; length: number; mode: number } {
  needBody(req, 28, 'FALLOCATE');
  const b = req.body;
  return {
    offset: Number(b.readBigUInt64LE(8)),
    length: Number(b.readBigUInt64LE(16)),
    mode: b.readUInt32LE(24),
  };
}

/** fuse_statfs_out for a filesystem of one file of `size` bytes, all of it in use. */
export function encodeStatfs(unique: bigint, size: number, bsize: number): Buffer {
  const out = replyBuffer(unique, 80);
  const p = Size.OUT_HEADER;
  out.writeBigUInt64LE(BigInt(Math.ceil(size / bsize)), p); // blocks
  out.writeBigUInt64LE(1n, p + 24); // files
  out.writeUInt32LE(bsize, p + 40);
  out.writeUInt32LE(255, p + 44); // namelen
  out.writeUInt32LE(bsize, p + 48); // frsize
  return out;
}
