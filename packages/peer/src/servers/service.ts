/** What a peer process serves on its ports (blocker, mapperd, vlmcd). */
import type { RespondOptions, XsegRequest } from '@archipelago/libxseg/segment';

export interface PeerService {
  /** Serves one request; resolves with the reply (the caller responds), rejects with the error. */
  serve(req: XsegRequest): Promise<RespondOptions>;
  close(): Promise<void>;
}
