/**
 * vlmcd's request handler: volume I/O on a Composer over a SegmentMapper (mapperd) and a
 * SegmentBlocker (blockerb). Reads are composed straight into the request's shared-memory data;
 * writes hand the request's data to the composer without a copy of their own. Map lookups come
 * from the SegmentMapper's lease-guarded cache when they can (no mapperd round trip). The ops it
 * serves are in protocol/vlmc-wire.ts.
 */
import { Composer } from '@archipelago/composer';
import { ArchipelagoError, decodeTargetPayload, encodeInfoReply, XF } from '@archipelago/libxseg';
import type { RespondOptions, Segment, XsegRequest } from '@archipelago/libxseg/segment';
import type { Logger } from '@archipelago/mapper';
import { SegmentBlocker } from '../clients/segment-blocker.js';
import { SegmentMapper } from '../clients/segment-mapper.js';
import type { VlmcdPeerOptions } from '../options.js';
import { decodeReadVector, VlmcFlag, VlmcOp } from '../protocol/vlmc-wire.js';
import { payloadOf, toJson } from '../protocol/wire.js';
import { notServed, type PeerService, peerService } from './service.js';

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
        throw notServed(req, 'vlmcd');
    }
  }

  const close = async () => {
    await Promise.allSettled([mapper.close(), blockerb.close()]);
  };
  return { composer, ...peerService(serve, close) };
}
