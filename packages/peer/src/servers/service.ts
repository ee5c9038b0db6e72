/** What every peer's service shares: the PeerService shape, PING, and the error for an unknown op. */
import { ArchipelagoError, Op, opName } from '@archipelago/libxseg';
import type { RespondOptions, XsegRequest } from '@archipelago/libxseg/segment';

/** What a peer process serves on its ports (blocker, mapperd, vlmcd). */
export interface PeerService {
  /** Serves one request; resolves with the reply (the caller responds), rejects with the error. */
  serve(req: XsegRequest): Promise<RespondOptions>;
  close(): Promise<void>;
}

/**
 * A PeerService from the handler of a peer's own ops and its close: PING, which every peer
 * answers, is answered here; `serve` fails an op it does not know with `notServed`.
 */
export function peerService(
  serve: (req: XsegRequest) => Promise<RespondOptions>,
  close: () => Promise<void>,
): PeerService {
  return { serve: (req) => (req.op === Op.PING ? Promise.resolve({ serviced: 0 }) : serve(req)), close };
}

/** ENOTSUP for an op `peer` ("mapperd", "vlmcd", "a blocker peer") does not serve. */
export function notServed(req: XsegRequest, peer: string): ArchipelagoError {
  return new ArchipelagoError('ENOTSUP', `op ${req.op} (${opName(req.op)}) is not served by ${peer}`, {
    details: { op: req.op },
  });
}
