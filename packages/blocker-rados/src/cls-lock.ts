/**
 * cls_lock's wire format, for the lock calls that go into compound object operations
 * (`rados_write_op_exec`, `rados_read_op_exec`): the inputs of its `lock`, `break_lock` and
 * `get_info` methods, and the `get_info` reply. librados' C API has no compound-op form of its
 * lock calls, and a lock must change together with its record (rados-locks.ts), so we encode them
 * as the Linux kernel's rbd client does (net/ceph/cls_lock_client.c).
 *
 * Ceph's encoding (src/cls/lock/cls_lock_ops.h, cls_lock_types.h, include/encoding.h): integers
 * little-endian; a string is a u32 length and its bytes; a struct is `ENCODE_START(v, compat)`:
 * u8 version, u8 compat, u32 length of the body, then the body; utime_t is u32 seconds, u32
 * nanoseconds; entity_name_t is u8 type, i64 number.
 */

/** ClsLockType LOCK_EXCLUSIVE. */
export const LOCK_EXCLUSIVE = 1;
/** LOCK_FLAG_MUST_RENEW: the lock must be held already by this client and cookie (else ENOENT). */
export const LOCK_FLAG_MUST_RENEW = 2;

/** Ceph entity types (CEPH_ENTITY_TYPE_*), as `client.4125` names them. */
const ENTITY_TYPES: Record<string, number> = { mon: 0x01, mds: 0x02, osd: 0x04, client: 0x08, mgr: 0x10 };

function u8(n: number): Buffer {
  return Buffer.from([n]);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

function str(s: string): Buffer {
  const bytes = Buffer.from(s, 'utf8');
  return Buffer.concat([u32(bytes.length), bytes]);
}

/** ENCODE_START(1, 1) ... ENCODE_FINISH around `parts`. */
function struct(parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  return Buffer.concat([u8(1), u8(1), u32(body.length), body]);
}

/** A utime_t of `ms` milliseconds (a duration here). */
function utime(ms: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(Math.floor(ms / 1000), 0);
  b.writeUInt32LE((ms % 1000) * 1_000_000, 4);
  return b;
}

/** entity_name_t of a name like `client.4125`. */
function entity(name: string): Buffer {
  const m = /^([a-z]+)\.(\d+)$/.exec(name);
  const type = m ? ENTITY_TYPES[m[1] as string] : undefined;
  if (!m || type === undefined) throw new TypeError(`not a Ceph entity name: ${JSON.stringify(name)}`);
  const b = Buffer.alloc(9);
  b.writeUInt8(type, 0);
  b.writeBigInt64LE(BigInt(m[2] as string), 1);
  return b;
}

export interface LockInput {
  /** The lock's name (`RadosLock`). */
  name: string;
  cookie: string;
  description: string;
  /** How long the OSD keeps it without a renewal, ms; 0: until unlocked. Whole milliseconds. */
  durationMs: number;
  /** 0 (take it; EBUSY when held by another, EEXIST when held by this client and cookie) or LOCK_FLAG_MUST_RENEW. */
  flags: number;
}

/** Input of `lock.lock` (cls_lock_lock_op): an exclusive lock, no tag. */
export function lockInput(o: LockInput): Buffer {
  return struct([
    str(o.name),
    u8(LOCK_EXCLUSIVE),
    str(o.cookie),
    str(''), // tag
    str(o.description),
    utime(o.durationMs),
    u8(o.flags),
  ]);
}

/** Input of `lock.break_lock` (cls_lock_break_op): removes `client`'s lock with `cookie` (ENOENT when not held so). */
export function breakInput(name: string, client: string, cookie: string): Buffer {
  return struct([str(name), entity(client), str(cookie)]);
}

/** Input of `lock.get_info` (cls_lock_get_info_op). */
export function getInfoInput(name: string): Buffer {
  return struct([str(name)]);
}

/** One holder of a cls lock, as the OSD keeps it (expired holders are left out by the OSD). */
export interface ClsLocker {
  /** Entity name, e.g. `client.4125`. */
  client: string;
  cookie: string;
  /** When the OSD drops it, ms since the epoch on the OSD's clock; null: never. */
  expires: number | null;
}

/** A reader of Ceph's encoding over `b`; every read checks the bounds (EIO-worthy RangeError). */
class Reader {
  at = 0;
  constructor(private readonly b: Buffer) {}
  need(n: number): void {
    if (this.at + n > this.b.length) throw new RangeError('cls_lock get_info reply is truncated');
  }
  u8(): number {
    this.need(1);
    return this.b.readUInt8(this.at++);
  }
  u32(): number {
    this.need(4);
    const v = this.b.readUInt32LE(this.at);
    this.at += 4;
    return v;
  }
  i64(): bigint {
    this.need(8);
    const v = this.b.readBigInt64LE(this.at);
    this.at += 8;
    return v;
  }
  str(): string {
    const n = this.u32();
    this.need(n);
    const s = this.b.toString('utf8', this.at, this.at + n);
    this.at += n;
    return s;
  }
  /** DECODE_START: the end offset of the struct that starts here. */
  start(): number {
    this.u8(); // version
    this.u8(); // compat
    const len = this.u32();
    this.need(len);
    return this.at + len;
  }
}

const TYPE_NAMES = new Map(Object.entries(ENTITY_TYPES).map(([k, v]) => [v, k]));

/**
 * Decodes a `lock.get_info` reply (cls_lock_get_info_reply): the lockers (entity, cookie and
 * expiry; each locker_info_t's address and description are skipped by its length), the lock type
 * and its tag.
 */
export function decodeLockInfo(b: Buffer): { lockers: ClsLocker[]; exclusive: boolean; tag: string } {
  const r = new Reader(b);
  const end = r.start();
  const n = r.u32();
  const lockers: ClsLocker[] = [];
  for (let i = 0; i < n; i++) {
    const idEnd = r.start();
    const type = r.u8();
    const num = r.i64();
    const cookie = r.str();
    r.at = idEnd;
    const infoEnd = r.start();
    const sec = r.u32();
    const nsec = r.u32();
    r.at = infoEnd;
    lockers.push({
      client: `${TYPE_NAMES.get(type) ?? `type${type}`}.${num}`,
      cookie,
      expires: sec === 0 && nsec === 0 ? null : sec * 1000 + Math.floor(nsec / 1_000_000),
    });
  }
  const type = r.u8();
  const tag = r.str();
  r.at = end;
  return { lockers, exclusive: type === LOCK_EXCLUSIVE, tag };
}
