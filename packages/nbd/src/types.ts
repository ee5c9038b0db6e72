/** One base:allocation extent as an export reports it. */
export interface NbdExtent {
  length: number;
  hole: boolean;
  zero: boolean;
}

/**
 * A block device the server can export. Offsets and lengths are in bytes and have already been
 * checked against `size()` and the advertised minimum block size when a method is called.
 */
export interface NbdExport {
  readonly name: string;
  readonly description?: string;
  /** Current size in bytes. */
  size(): number;
  readonly readonly: boolean;
  /**
   * Advertised minimum block size (a power of two, 1..65536; default 1). Preferred block size is
   * advertised as max(4096, minimum) and the maximum payload as 32 MiB.
   */
  readonly minBlockSize?: number;
  /** Must resolve to a buffer of exactly `length` bytes that nobody mutates afterwards. */
  read(offset: number, length: number): Promise<Buffer>;
  /**
   * Optional: fills `target` with the `target.length` bytes at `offset`, and settles only once
   * nothing writes into `target` any more (also on failure). With it, large READs are read into
   * reused buffers of the server's read pool instead of a fresh Buffer per request.
   */
  readInto?(offset: number, target: Buffer): Promise<void>;
  /** `data` may be a slice of a socket buffer: copy it if it must outlive the call. */
  write(offset: number, data: Buffer, opts: { fua: boolean }): Promise<void>;
  flush(): Promise<void>;
  trim(offset: number, length: number, opts: { fua: boolean }): Promise<void>;
  /**
   * With `fastZero`, an export that cannot zero faster than writing zeroes must reject with an
   * ArchipelagoError whose code is ENOTSUP (the client then falls back to writing).
   */
  writeZeroes(
    offset: number,
    length: number,
    opts: { fua: boolean; noHole: boolean; fastZero: boolean },
  ): Promise<void>;
  /** base:allocation extents covering [offset, offset+length). Absent: everything is data. */
  blockStatus?(offset: number, length: number): Promise<NbdExtent[]>;
  cache?(offset: number, length: number): Promise<void>;
}

/** A pino-compatible logger subset. */
export interface NbdLogger {
  info(o: object | string, msg?: string): void;
  warn(o: object | string, msg?: string): void;
  error(o: object | string, msg?: string): void;
  debug(o: object | string, msg?: string): void;
}

export interface NbdServerOptions {
  /** Looks an export up by name (the empty name is mapped to `defaultExport` first, if set). */
  exports: (name: string) => NbdExport | undefined | Promise<NbdExport | undefined>;
  /** Names returned by NBD_OPT_LIST. Without it, LIST returns `defaultExport` (if any). */
  list?: () => string[];
  /** Export used when the client asks for the empty name. */
  defaultExport?: string;
  logger?: NbdLogger;
  /** Back-pressure: stop reading a connection while its in-flight bytes exceed this (64 MiB). */
  maxInflightBytes?: number;
  /** Advertise NBD_FLAG_CAN_MULTI_CONN (default true). */
  multiConn?: boolean;
  /**
   * SO_SNDBUF for accepted sockets, in bytes (default 4 MiB; the kernel caps it at
   * net.core.wmem_max and doubles it). 0 leaves the kernel's default (~208 KiB). Needs
   * @archipelago/fastio's addon (Linux); without it the option is ignored.
   */
  sendBufferBytes?: number;
  /**
   * Bytes of reused buffers for READ replies of 64 KiB..4 MiB from exports with `readInto`
   * (default 64 MiB, shared by the server's connections; slabs are allocated as reads need them
   * and kept). 0 disables the pool: every READ gets a fresh Buffer from `read`.
   */
  readPoolBytes?: number;
  /**
   * Send replies with one non-blocking `sendmsg` per batch on the socket's fd
   * (@archipelago/fastio `sendNowait`) while the socket's stream has nothing queued, instead of a
   * `socket.write` each (default true). A stream write costs a libuv write request whose
   * completion takes another event-loop turn and a callback into JavaScript; what the socket does
   * not take at once goes through the stream as before. Without the addon (or with
   * `ARCHIP_FASTIO=0`) replies always go through the stream.
   */
  directSend?: boolean;
  /**
   * Receive a WRITE payload that has not all arrived with one non-blocking `recv` after another
   * straight into its buffer (a pooled slot from 64 KiB; @archipelago/fastio `recvNowait`),
   * instead of through the socket stream's fresh 64 KiB chunks and a copy (default true). The
   * end of the stream and socket errors are still the stream's to report. Without the addon (or
   * with `ARCHIP_FASTIO=0`) payloads always come through the stream.
   */
  directRecv?: boolean;
}

export type ListenTarget =
  | { port: number; host?: string }
  | {
      path: string;
      /**
       * A socket left at `path` by a server that died without unlinking it (kill -9), which
       * nobody listens on, is unlinked and the listen retried (default true). A socket a live
       * server answers on is never touched: the listen fails with EBUSY.
       */
      replaceStale?: boolean;
    };
export interface ListenAddress {
  port?: number;
  path?: string;
}
