/**
 * mapperd's request handler: each segment request becomes one call on a Mapper whose blockers are
 * SegmentBlockers to blockerm and blockerb (mapper-wire.ts). The volume lock is taken with this
 * mapperd's identity, so an embedded `vlmc` (another identity) and the daemons never write one
 * volume at once: the lock decides.
 */
import { ArchipelagoError, decodeTargetPayload, opName, XF } from '@archipelago/libxseg';
import type { RespondOptions, Segment, XsegRequest } from '@archipelago/libxseg/segment';
import {
  type CloneOptions,
  type CreateFromEntriesOptions,
  type LoadOptions,
  type Logger,
  Mapper,
} from '@archipelago/mapper';
import type { PeerService } from './blocker-peer.js';
import { encodeSegments, MapperOp } from './mapper-wire.js';
import type { MapperdPeerOptions } from './options.js';
import { SegmentBlocker } from './segment-blocker.js';
import { fromJson, payloadOf, toJson } from './wire.js';

const json = (v: unknown): RespondOptions => {
  const data = toJson(v);
  return { data, serviced: data.length };
};

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new ArchipelagoError('EINVAL', `${what}: the payload must be a JSON object`);
  return v as Record<string, unknown>;
}

function optNum(o: Record<string, unknown>, key: string, what: string): number | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    throw new ArchipelagoError('EINVAL', `${what}: "${key}" must be an integer >= 0`);
  return v;
}

/** A Mapper over SegmentBlockers to blockerm and blockerb, served on the segment. */
export function createMapperService(
  o: MapperdPeerOptions,
  segment: Segment,
  logger?: Logger,
): PeerService & { mapper: Mapper } {
  const blockerm = new SegmentBlocker({
    segment,
    port: o.blockermPort,
    identity: o.identity,
    kind: 'blockerm',
  });
  const blockerb = new SegmentBlocker({
    segment,
    port: o.blockerbPort,
    identity: o.identity,
    kind: 'blockerb',
  });
  const mapper = new Mapper({
    blockerm,
    blockerb,
    ...(o.lockTimeoutMs !== undefined ? { lockTimeoutMs: o.lockTimeoutMs } : {}),
    ...(logger ? { logger } : {}),
  });

  const load = (req: XsegRequest): LoadOptions => ((req.flags & XF.ASSUMEV0) !== 0 ? { assumeV0: true } : {});
  const args = (req: XsegRequest) => obj(fromJson(payloadOf(req), opName(req.op)), opName(req.op));

  async function serve(req: XsegRequest): Promise<RespondOptions> {
    const name = req.target;
    switch (req.op) {
      case MapperOp.PING:
        return { serviced: 0 };
      case MapperOp.HELLO:
        return json({ identity: o.identity, open: mapper.openVolumes() });
      case MapperOp.MAPR:
        return resp(encodeSegments(await mapper.mapRead(name, req.offset, req.size, load(req))));
      case MapperOp.MAPW:
        return resp(encodeSegments(await mapper.mapWrite(name, req.offset, req.size, load(req))));
      case MapperOp.INFO:
        return json(await mapper.info(name, load(req)));
      case MapperOp.OPEN:
        return json(await mapper.openVolume(name, load(req)));
      case MapperOp.CLOSE:
        await mapper.closeVolume(name);
        return { serviced: 0 };
      case MapperOp.SNAPSHOT:
        return json(await mapper.snapshot(name, decodeTargetPayload(Buffer.from(payloadOf(req)))));
      case MapperOp.RENAME:
        return json(await mapper.rename(name, decodeTargetPayload(Buffer.from(payloadOf(req)))));
      case MapperOp.TRUNCATE:
        return json(await mapper.resize(name, req.offset));
      case MapperOp.DELETE:
        await mapper.remove(name, load(req));
        return { serviced: 0 };
      case MapperOp.CLONE: {
        const a = args(req);
        const size = optNum(a, 'size', 'clone');
        if (a.source === undefined || a.source === '') {
          const blocksize = optNum(a, 'blocksize', 'create');
          if (size === undefined) throw new ArchipelagoError('EINVAL_SIZE', 'create: "size" is required');
          return json(await mapper.create(name, { size, ...(blocksize ? { blocksize } : {}) }));
        }
        if (typeof a.source !== 'string')
          throw new ArchipelagoError('EINVAL', 'clone: "source" must be a string');
        const co: CloneOptions = { ...(size !== undefined ? { size } : {}) };
        if (a.assumeV0 === true) co.assumeV0 = true;
        const v0Size = optNum(a, 'v0Size', 'clone');
        if (v0Size !== undefined) co.v0Size = v0Size;
        return json(await mapper.clone(a.source, name, co));
      }
      case MapperOp.CREATE:
        // The mapper checks every field of the options (sizes, entry names, counts).
        return json(await mapper.createFromEntries(name, args(req) as unknown as CreateFromEntriesOptions));
      case MapperOp.HASH:
        return json(await mapper.hash(name));
      case MapperOp.FLUSH:
        await mapper.flush();
        return { serviced: 0 };
      case MapperOp.LOCK:
        await mapper.lock(name);
        return { serviced: 0 };
      case MapperOp.UNLOCK:
        await mapper.unlock(name, { force: (req.flags & XF.FORCE) !== 0 });
        return { serviced: 0 };
      case MapperOp.LIST:
        return json(await mapper.list());
      case MapperOp.ENTRIES:
        return json(await mapper.entries(name, load(req)));
      case MapperOp.ASSERTWRITABLE:
        await mapper.assertWritable(name, load(req));
        return { serviced: 0 };
      case MapperOp.DISCARD:
        await mapper.discard(name, req.offset, load(req));
        return { serviced: 0 };
      default:
        throw new ArchipelagoError('ENOTSUP', `op ${req.op} (${opName(req.op)}) is not served by mapperd`, {
          details: { op: req.op },
        });
    }
  }

  return {
    mapper,
    serve,
    async close() {
      try {
        await mapper.close();
      } finally {
        await Promise.allSettled([blockerm.close(), blockerb.close()]);
      }
    },
  };
}

function resp(data: Buffer): RespondOptions {
  return { data, serviced: data.length };
}
