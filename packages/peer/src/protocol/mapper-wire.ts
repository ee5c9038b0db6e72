/**
 * The mapper protocol over the segment (mapperd). Ops keep the original's numbers where it had
 * one (X_MAPR, X_MAPW, X_OPEN, X_CLOSE, X_SNAPSHOT, X_CLONE, X_DELETE, X_INFO, X_HASH, X_CREATE,
 * X_RENAME, X_TRUNCATE, X_FLUSH); the calls it had no op for use ours from 80 (the blocker peer's
 * start at 64, vlmcd's at 96, so a request sent to the wrong peer gets ENOTSUP, never a
 * misreading). `target` is always the volume name. Arguments and results that are not plain
 * numbers travel as JSON (wire.ts `toJson`); map replies use the original's binary layout.
 */
import { decodeMapReply, encodeMapReply, Op, PAYLOAD, XF_MAPFLAG } from '@archipelago/libxseg';
import type { ObjectSegment } from '@archipelago/mapper';

export const MapperOp = {
  PING: Op.PING,
  /** resize: offset = the new size (the original's X_TRUNCATE). */
  TRUNCATE: Op.TRUNCATE,
  /** remove. */
  DELETE: Op.DELETE,
  /** create (no source) or clone: data = JSON `{ source?, size?, blocksize?, incomplete?, assumeV0?, v0Size? }`. */
  CLONE: Op.CLONE,
  /** info: reply JSON VolumeInfo. */
  INFO: Op.INFO,
  /** map for read / write: offset, size; flag XF_ASSUMEV0; reply = map reply (below). */
  MAPR: Op.MAPR,
  MAPW: Op.MAPW,
  OPEN: Op.OPEN,
  CLOSE: Op.CLOSE,
  /** snapshot: data = the snapshot name (target payload); reply JSON VolumeInfo. */
  SNAPSHOT: Op.SNAPSHOT,
  /** hash a snapshot: reply JSON HashResult. */
  HASH: Op.HASH,
  /** createFromEntries: data = JSON CreateFromEntriesOptions. */
  CREATE: Op.CREATE,
  /** rename: data = the new name (target payload); reply JSON VolumeInfo. */
  RENAME: Op.RENAME,
  FLUSH: Op.FLUSH,
  /** Ours from here. lock / unlock (flag XF_FORCE breaks another owner's lock). */
  LOCK: 80,
  UNLOCK: 81,
  /** list: reply JSON VolumeSummary[]. */
  LIST: 82,
  /** entries: reply JSON MapEntry[]. */
  ENTRIES: 83,
  ASSERTWRITABLE: 84,
  /** discard block `offset` (the block index). */
  DISCARD: 85,
  /** hello: reply JSON `{ identity, open: string[] }` (the lock identity of this mapperd). */
  HELLO: 86,
  /**
   * Map lease (see "Map cache" below): renews the sender's lease on the volume's map. Flag
   * MapperFlag.CACHE; reply = the lease trailer alone (lease 0: refused).
   */
  LEASE: 87,
  /**
   * Sent by mapperd **to** a lease holder's port (the SegmentMapper of vlmcd), never to mapperd:
   * drop what you cached of volume `target`, drain the I/O that used it, then answer.
   */
  INVALIDATE: 88,
  /** complete: a volume created incomplete (`{ incomplete: true }`: an import) becomes usable. */
  COMPLETE: 89,
  /**
   * The trash (mapper README, "Trash"): data = JSON `{ action, ... }`; `list` (`{ ttlMs? }`, reply
   * JSON TrashEntry[]), `restore` (target = the name, `{ entry? }`, reply JSON VolumeInfo),
   * `purge` (target = the entry, reply JSON TrashEntry), `purge-expired` (`{ nowMs, ttlMs? }`,
   * reply JSON TrashEntry[]).
   */
  TRASH: 90,
  /**
   * rollback (mapper README "Lineage, rollback, flatten"): data = the snapshot's name (target
   * payload); reply JSON VolumeInfo. Refused (EBUSY) while mapperd holds the volume open for
   * another client (mapped, or kept open by `vlmc open`): only a lease holder may roll back the
   * volume it serves.
   */
  ROLLBACK: 91,
  /**
   * flatten: copies up every block the clone shares with its parent, online (the clients' I/O
   * goes on, uncached while it runs); reply JSON FlattenResult.
   */
  FLATTEN: 92,
  /**
   * addClient: data = JSON `{ addr }`, a librados client address of the sender (a `vlmc map`
   * endpoint's own data client, RADOS). mapperd makes sure it holds the volume (as for a write)
   * and registers `addr` in the volume lock's record through blockerm (blocker op ADD_CLIENT):
   * every later break of the lock blocklists it too. Reply JSON LockRecord. `ENOTSUP` when
   * blockerm's store cuts off no clients (files).
   */
  ADD_CLIENT: 93,
  /**
   * removeClient: data = JSON `{ addr }`, an address the sender registered with ADD_CLIENT and
   * whose client it shut down (an unmapped volume's endpoint client). mapperd takes it off the
   * volume lock's record through blockerm (blocker op REMOVE_CLIENT) if it still holds the
   * volume; it does not take a yielded volume back for it. Reply JSON LockRecord, or null when
   * there was nothing to take off. `ENOTSUP` when blockerm's store cuts off no clients (files).
   */
  REMOVE_CLIENT: 94,
} as const;

/**
 * Flags of ours on mapper requests (from 0x1000, above the blocker peer's and vlmcd's).
 */
export const MapperFlag = {
  /**
   * The sender caches maps (vlmcd's SegmentMapper). On MAPR/MAPW/LEASE: grant it a lease and
   * append the lease trailer to the reply. On a map change (snapshot, remove, rename, resize,
   * close, unlock, discard): the sender dropped its own cache for the volume, so mapperd does not
   * recall it from the sender (it still recalls it from any other holder).
   */
  CACHE: 0x1000,
  /**
   * On OPEN: the sender hands the volume over to the host (`handOver`: what `vlmc open` leaves
   * behind): mapperd keeps it open for the host. On CLOSE: the sender's `restoreHostHold` (an
   * unmapping endpoint): a volume the host holds so stays open (the other holders' map leases
   * recalled) instead of being closed.
   */
  HOST_HOLD: 0x2000,
} as const;

/** Our bit in a map-reply segment's flags (with MapperFlag.CACHE): this volume may write the object in place. */
export const MAPFLAG_WRITABLE = 0x100;

/**
 * Map cache. A client that caches maps (vlmcd) sends its MAPR/MAPW with MapperFlag.CACHE; while
 * mapperd holds the volume open (its lock, every change through it) and no map change runs on it,
 * it grants the sender a **lease** of `leaseMs` on the volume and appends this trailer to the map
 * reply (after the block size): u64 volume size, u32 lease ms (0 = no lease: do not cache),
 * u32 flags (LEASE_READONLY). Segments then carry MAPFLAG_WRITABLE. One holder per volume.
 *
 * The holder may answer map lookups from what it cached until the lease runs out (counted from
 * when it *sent* the request, so its deadline is never later than mapperd's), and renews it
 * (op LEASE) while it uses it. Before any map change that does not come from the holder itself,
 * mapperd takes the lease back (op INVALIDATE to the holder's port, which drops the cache and
 * drains the volume's I/O before answering), and grants no lease while the change runs. A holder
 * that died needs no recall (its cache died with it). A restarted mapperd knows no leases: it
 * makes such changes wait until one lease time after its start, when every lease its
 * predecessor granted has run out. Details: segment-mapper.ts, mapper-peer.ts.
 */
export const LEASE_TRAILER = 16;
export const LEASE_READONLY = 0x1;

export interface LeaseInfo {
  /** Volume size in bytes. */
  size: number;
  /** Lease granted, ms (0: none). */
  leaseMs: number;
  readonly: boolean;
}

export function encodeLease(l: LeaseInfo): Buffer {
  const b = Buffer.alloc(LEASE_TRAILER);
  b.writeBigUInt64LE(BigInt(l.size), 0);
  b.writeUInt32LE(l.leaseMs, 8);
  b.writeUInt32LE(l.readonly ? LEASE_READONLY : 0, 12);
  return b;
}

export function decodeLease(b: Buffer, at = 0): LeaseInfo {
  if (b.length < at + LEASE_TRAILER) throw new RangeError('reply lacks the lease trailer');
  return {
    size: Number(b.readBigUInt64LE(at)),
    leaseMs: b.readUInt32LE(at + 8),
    readonly: (b.readUInt32LE(at + 12) & LEASE_READONLY) !== 0,
  };
}

/**
 * Map reply: the original's `u32 cnt` + `cnt` × 280-byte segments (XF_MAPFLAG_ZERO for the zero
 * block), then — our extension, the original had no room for it — the volume's block size as a
 * u64, from which the client derives each segment's block index.
 */
export function encodeSegments(
  segs: readonly ObjectSegment[],
  cache?: { lease: LeaseInfo; writable: readonly boolean[] },
): Buffer {
  const body = encodeMapReply(
    segs.map((s, i) => ({
      target: s.target,
      flags: (s.zero ? XF_MAPFLAG.ZERO : 0) | (cache?.writable[i] ? MAPFLAG_WRITABLE : 0),
      offset: s.offset,
      size: s.size,
    })),
  );
  const out = Buffer.allocUnsafe(body.length + 8 + (cache ? LEASE_TRAILER : 0));
  body.copy(out);
  out.writeBigUInt64LE(BigInt(segs[0]?.blocksize ?? 0), body.length);
  if (cache) encodeLease(cache.lease).copy(out, body.length + 8);
  return out;
}

export function decodeSegments(data: Buffer, offset: number): ObjectSegment[] {
  return decodeSegmentsCached(data, offset, false).segs;
}

/** A map reply with, when `cached` (the request had MapperFlag.CACHE), the lease and the writable bits. */
export function decodeSegmentsCached(
  data: Buffer,
  offset: number,
  cached: boolean,
): { segs: ObjectSegment[]; writable: boolean[]; lease: LeaseInfo | null; blocksize: number } {
  const raw = decodeMapReply(data);
  const at = PAYLOAD.mapHeader + raw.length * PAYLOAD.mapSegment;
  if (data.length < at + 8) throw new RangeError('map reply lacks the block size');
  const blocksize = Number(data.readBigUInt64LE(at));
  if (raw.length > 0 && !(blocksize > 0)) throw new RangeError('map reply has block size 0');
  const lease = cached && data.length >= at + 8 + LEASE_TRAILER ? decodeLease(data, at + 8) : null;
  let pos = offset;
  const writable: boolean[] = [];
  const segs = raw.map((s) => {
    const seg: ObjectSegment = {
      index: Math.floor(pos / blocksize),
      target: s.target,
      zero: (s.flags & XF_MAPFLAG.ZERO) !== 0,
      offset: s.offset,
      size: s.size,
      blocksize,
    };
    writable.push((s.flags & MAPFLAG_WRITABLE) !== 0);
    pos += s.size;
    return seg;
  });
  return { segs, writable, lease, blocksize };
}

/** Room to reserve for a map reply (for 4 KiB blocks or larger; the peer grows the buffer if a reply needs more). */
export function mapReplyRoom(length: number): number {
  const maxSegs = Math.floor(length / 4096) + 2;
  return PAYLOAD.mapHeader + maxSegs * PAYLOAD.mapSegment + 8 + LEASE_TRAILER;
}
