/**
 * What the two phases of a connection (handshake.ts, then transmission.ts) share with the
 * connection that runs them (connection.ts): the server's settings, the parse state, and the
 * socket-level actions (parse more, drop, disconnect).
 */
import type { Socket } from 'node:net';
import type { ByteQueue } from './byte-queue.js';
import type { ReadBufferPool } from './read-pool.js';
import type { NbdExport, NbdLogger } from './types.js';

/** Server-wide settings a connection needs. */
export interface ConnectionContext {
  readonly lookup: (name: string) => Promise<NbdExport | undefined>;
  readonly list: () => string[];
  readonly logger: NbdLogger;
  readonly maxInflightBytes: number;
  readonly multiConn: boolean;
  /** Reused buffers for large READ replies (exports with `readInto`); undefined: none. */
  readonly readPool: ReadBufferPool | undefined;
  /** Replies go straight to the socket (`sendNowait`) while its stream has nothing queued. */
  readonly directSend: boolean;
  /** WRITE payloads not all received yet are read straight from the socket (`recvNowait`). */
  readonly directRecv: boolean;
}

/** Where the parser of one connection stands. One field, read and written by both phases. */
export type ConnState =
  | 'flags' // handshake: waiting for the 4-byte client flags
  | 'optHeader' // handshake: waiting for a 16-byte option header
  | 'optData' // handshake: waiting for the option payload
  | 'optBusy' // handshake: an option is being answered (export lookup may be async)
  | 'reqHeader' // transmission: waiting for a 28-byte request header
  | 'reqPayload' // transmission: waiting for a WRITE payload
  | 'discard' // transmission: throwing away an oversized WRITE payload
  | 'disc' // NBD_CMD_DISC, NBD_OPT_ABORT, client EOF or server shutdown: finishing in-flight requests
  | 'closed';

/** What the handshake settled: the export and how to talk about it. */
export interface Negotiated {
  readonly exp: NbdExport;
  /** The export's minimum block size (checked: a power of two in 1..65536). */
  readonly minBlock: number;
  /** NBD_OPT_STRUCTURED_REPLY was negotiated. */
  readonly structured: boolean;
  /** `base:allocation` was selected for this very export: BLOCK_STATUS is allowed. */
  readonly baseAllocation: boolean;
}

/** The connection as its phases see it (implemented by `NbdConnection`). */
export interface ConnectionCore {
  readonly id: number;
  readonly socket: Socket;
  /** Received bytes not parsed yet. */
  readonly queue: ByteQueue;
  readonly ctx: ConnectionContext;
  readonly log: NbdLogger;
  state: ConnState;
  /** Parses whatever the queue holds, as far as the current state allows. */
  pump(): void;
  /** Protocol violation or fatal error: log it and hard-disconnect this connection only. */
  drop(reason: string, details?: object): void;
  /** Soft disconnect: parse nothing more, finish the requests in flight, then close. */
  beginDisconnect(): void;
  /** In state `disc` with nothing in flight: end the socket once the last replies are flushed. */
  maybeFinishDisconnect(): void;
  /** The handshake is over: serve `n.exp` from now on. */
  enterTransmission(n: Negotiated): void;
}
