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
  /** create (no source) or clone: data = JSON `{ source?, size?, blocksize?, assumeV0?, v0Size? }`. */
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
} as const;

/**
 * Map reply: the original's `u32 cnt` + `cnt` × 280-byte segments (XF_MAPFLAG_ZERO for the zero
 * block), then — our extension, the original had no room for it — the volume's block size as a
 * u64, from which the client derives each segment's block index.
 */
export function encodeSegments(segs: readonly ObjectSegment[]): Buffer {
  const body = encodeMapReply(
    segs.map((s) => ({
      target: s.target,
      flags: s.zero ? XF_MAPFLAG.ZERO : 0,
      offset: s.offset,
      size: s.size,
    })),
  );
  const out = Buffer.allocUnsafe(body.length + 8);
  body.copy(out);
  out.writeBigUInt64LE(BigInt(segs[0]?.blocksize ?? 0), body.length);
  return out;
}

export function decodeSegments(data: Buffer, offset: number): ObjectSegment[] {
  const segs = decodeMapReply(data);
  const at = PAYLOAD.mapHeader + segs.length * PAYLOAD.mapSegment;
  if (data.length < at + 8) throw new RangeError('map reply lacks the block size');
  const blocksize = Number(data.readBigUInt64LE(at));
  if (segs.length > 0 && !(blocksize > 0)) throw new RangeError('map reply has block size 0');
  let pos = offset;
  return segs.map((s) => {
    const seg: ObjectSegment = {
      index: Math.floor(pos / blocksize),
      target: s.target,
      zero: (s.flags & XF_MAPFLAG.ZERO) !== 0,
      offset: s.offset,
      size: s.size,
      blocksize,
    };
    pos += s.size;
    return seg;
  });
}

/** Room to reserve for a map reply (for 4 KiB blocks or larger; the peer grows the buffer if a reply needs more). */
export function mapReplyRoom(length: number): number {
  const maxSegs = Math.floor(length / 4096) + 2;
  return PAYLOAD.mapHeader + maxSegs * PAYLOAD.mapSegment + 8;
}
