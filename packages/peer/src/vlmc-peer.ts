/**
 * vlmcd's request handler: volume I/O on a Composer over a SegmentMapper (mapperd) and a
 * SegmentBlocker (blockerb). Reads are composed straight into the request's shared-memory data;
 * writes hand the request's data to the composer without a copy of their own. Map lookups come
 * from the SegmentMapper's lease-guarded cache when they can (no mapperd round trip).
 *
 * Ops (target = the volume): X_READ 1 and X_WRITE 2 (offset, size; XF_FUA; a zero-size write with
 * XF_FLUSH is a flush barrier, as in the original), X_FLUSH 20, X_SNAPSHOT 16 (data = the snapshot
 * name as a target payload; reply JSON VolumeInfo), X_CLOSE 15, X_DELETE 5, X_INFO 11 (reply
 * `xseg_reply_info {u64 size}`); ours from 96: WRITEZEROES 96 (flag NOHOLE), TRIM 97, BLOCKSTATUS
 * 98 (reply JSON extents), FREEZE 99 (drain, then answer: a barrier for one volume), READV 100
 * (several reads of one volume in one request, see `encodeReadVector`).
 */
import { Composer } from '@archipelago/composer';
import { ArchipelagoError, decodeTargetPayload, encodeInfoReply, Op, opName, XF } from '@archipelago/libxseg';
import type { RespondOptions, Segment, XsegRequest } from '@archipelago/libxseg/segment';
import type { Logger } from '@archipelago/mapper';
import type { PeerService } from './blocker-peer.js';
import type { VlmcdPeerOptions } from './options.js';
import { SegmentBlocker } from './segment-blocker.js';
import { SegmentMapper } from './segment-mapper.js';
import { payloadOf, toJson } from './wire.js';

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

export function createVlmcService(
  o: VlmcdPeerOptions,
  segment: Segment,
  logger?: Logger,
): PeerService & { composer: Composer } {
  // Map lookups are cached under mapperd's leases; when mapperd takes a lease back (someone else
  // changes the map), the volume's I/O drains before it answers (segment-mapper.ts).
  const mapper = new SegmentMapper({ segment, port: o.mapperPort, cache: true });
  const blockerb = new SegmentBlocker({ segment, port: o.blockerPort, kind: 'blockerb' });
  const composer = new Composer({ mapper, blockerb, ...(logger ? { logger } : {}) });
  mapper.onRecall = (name) => composer.frozen(name, async () => {});

  async function serve(req: XsegRequest): Promise<RespondOptions> {
    const name = req.target;
    const fua = (req.flags & XF.FUA) !== 0;
    switch (req.op) {
      case VlmcOp.PING:
        return { serviced: 0 };
      case VlmcOp.READ:
        await composer.readInto(name, req.offset, payloadOf(req));
        return { serviced: req.size };
      case VlmcOp.READV: {
        const items = decodeReadVector(payloadOf(req));
        const total = items.reduce((n, it) => n + it.length, 0);
        if (total > req.data.length)
          throw new ArchipelagoError('EINVAL', `READV: ${total} bytes to read, ${req.data.length} reserved`);
        let at = 0;
        // allSettled: no read may still fill the data once the (failed) reply went back.
        const settled = await Promise.allSettled(
          items.map((it) => {
            const out = req.data.subarray(at, at + it.length);
            at += it.length;
            return composer.readInto(name, it.offset, out);
          }),
        );
        for (const r of settled) if (r.status === 'rejected') throw r.reason;
        return { serviced: total };
      }
      case VlmcOp.WRITE:
        if (req.size === 0 && (req.flags & (XF.FLUSH | XF.FUA)) !== 0) {
          await composer.flush(name);
          return { serviced: 0 };
        }
        await composer.write(name, req.offset, payloadOf(req), { fua });
        return { serviced: req.size };
      case VlmcOp.WRITEZEROES:
        await composer.writeZeroes(name, req.offset, req.size, {
          fua,
          noHole: (req.flags & VlmcFlag.NOHOLE) !== 0,
        });
        return { serviced: 0 };
      case VlmcOp.TRIM:
        await composer.trim(name, req.offset, req.size);
        return { serviced: 0 };
      case VlmcOp.FLUSH:
        await composer.flush(name === '' ? undefined : name);
        return { serviced: 0 };
      case VlmcOp.BLOCKSTATUS: {
        const data = toJson(await composer.blockStatus(name, req.offset, req.size));
        return { data, serviced: data.length };
      }
      case VlmcOp.FREEZE:
        await composer.frozen(name, async () => {});
        return { serviced: 0 };
      case VlmcOp.SNAPSHOT: {
        const snap = decodeTargetPayload(Buffer.from(payloadOf(req)));
        const data = toJson(await composer.snapshot(name, snap));
        return { data, serviced: data.length };
      }
      case VlmcOp.CLOSE:
        await composer.close(name);
        return { serviced: 0 };
      case VlmcOp.DELETE:
        await composer.remove(name);
        return { serviced: 0 };
      case VlmcOp.INFO: {
        const data = encodeInfoReply(BigInt(await composer.size(name)));
        return { data, serviced: data.length };
      }
      default:
        throw new ArchipelagoError('ENOTSUP', `op ${req.op} (${opName(req.op)}) is not served by vlmcd`, {
          details: { op: req.op },
        });
    }
  }

  return {
    composer,
    serve,
    async close() {
      await Promise.allSettled([mapper.close(), blockerb.close()]);
    },
  };
}
