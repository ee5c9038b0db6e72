/**
 * The vlmcd protocol over the segment: volume I/O, one request per call of the composer
 * (`VolumeApi`). vlmcd serves it (servers/vlmc-peer.ts), SegmentVolumes sends it
 * (clients/segment-volumes.ts).
 *
 * Ops (target = the volume): X_READ 1 and X_WRITE 2 (offset, size; XF_FUA; a zero-size write with
 * XF_FLUSH is a flush barrier, as in the original), X_FLUSH 20, X_SNAPSHOT 16 (data = the snapshot
 * name as a target payload; reply JSON VolumeInfo), X_CLOSE 15, X_DELETE 5, X_INFO 11 (reply
 * `xseg_reply_info {u64 size}`); ours from 96: WRITEZEROES 96 (flag NOHOLE), TRIM 97, BLOCKSTATUS
 * 98 (reply JSON extents), FREEZE 99 (drain, then answer: a barrier for one volume), READV 100
 * (several reads of one volume in one request, see `encodeReadVector`).
 */
import { ArchipelagoError, Op } from '@archipelago/libxseg';

export const VlmcOp = {
  PING: Op.PING,
  READ: Op.READ,
  WRITE: Op.WRITE,
  DELETE: Op.DELETE,
  INFO: Op.INFO,
  CLOSE: Op.CLOSE,
  SNAPSHOT: Op.SNAPSHOT,
  FLUSH: Op.FLUSH,
  WRITEZEROES: 96,
  TRIM: 97,
  BLOCKSTATUS: 98,
  FREEZE: 99,
  READV: 100,
} as const;

/**
 * READV: the request's data starts with `u32 count, u32 0`, then `count` × `{u64 offset, u64
 * length}`; `size` = those bytes. The reply data (the same shared memory, reserved as the larger
 * of the two) is the reads' bytes one after the other; `serviced` = their sum. Any failed read
 * fails the whole request (the client then reads one by one, for each read's own answer).
 * One request and one reply instead of `count`: fewer wake-ups on both sides.
 */
export const READV_MAX = 256;

export function readVectorBytes(count: number): number {
  return 8 + 16 * count;
}

export function encodeReadVector(into: Buffer, items: readonly { offset: number; length: number }[]): number {
  into.writeUInt32LE(items.length, 0);
  into.writeUInt32LE(0, 4);
  let at = 8;
  for (const it of items) {
    into.writeBigUInt64LE(BigInt(it.offset), at);
    into.writeBigUInt64LE(BigInt(it.length), at + 8);
    at += 16;
  }
  return at;
}

export function decodeReadVector(data: Buffer): { offset: number; length: number }[] {
  if (data.length < 8) throw new ArchipelagoError('EINVAL', 'READV: shorter than its header');
  const count = data.readUInt32LE(0);
  if (count > READV_MAX || data.length < readVectorBytes(count))
    throw new ArchipelagoError(
      'EINVAL',
      `READV: ${count} reads do not fit ${data.length} bytes (at most ${READV_MAX})`,
    );
  const out: { offset: number; length: number }[] = [];
  for (let i = 0, at = 8; i < count; i++, at += 16) {
    const offset = Number(data.readBigUInt64LE(at));
    const length = Number(data.readBigUInt64LE(at + 8));
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length))
      throw new ArchipelagoError('EINVAL', 'READV: offset or length out of range');
    out.push({ offset, length });
  }
  return out;
}

/** Flags of ours for vlmcd (from 0x400, above the blocker peer's). */
export const VlmcFlag = {
  /** write-zeroes: write real zeros instead of returning whole blocks to the zero block. */
  NOHOLE: 0x400,
} as const;
