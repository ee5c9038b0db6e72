import type { MapEntry } from '@archipelago/mapfile';

/** What `info` tells about a map. */
export interface VolumeInfo {
  name: string;
  /** Size in bytes. */
  size: number;
  blocksize: number;
  /** Generation counter; copy-ups name objects `<volume>_<epoch>_<index>`. */
  epoch: bigint;
  /** A snapshot (or Pithos file): read-only. */
  readonly: boolean;
  /** On-storage format version the map was found in (2 once upgraded). */
  version: 0 | 1 | 2;
  /** Number of blocks (map entries). */
  objects: number;
  /** Entries that name an object (not the zero block). */
  allocated: number;
  /** Entries this volume owns and may write in place. */
  writable: number;
  /** Who holds the volume lock, or null. */
  lockOwner: string | null;
}

/** What `list` tells about each map: header facts only. */
export type VolumeSummary = Omit<VolumeInfo, 'allocated' | 'writable' | 'lockOwner'>;

/** One object segment of a volume byte range. */
export interface ObjectSegment {
  /** Block index in the volume. */
  index: number;
  /** Object name in blockerb; the zero block's name when `zero`. */
  target: string;
  /** No object backs this block: reads are zeros, no I/O. */
  zero: boolean;
  /** Byte offset within the object. */
  offset: number;
  /** Bytes covered. */
  size: number;
  /** The volume's block size (a segment with offset 0 and size == blocksize covers a whole block). */
  blocksize: number;
}

export interface LoadOptions {
  /** Treat a map without signature as a v0 (Pithos) hashmap (reference §1.4, XF_ASSUMEV0). */
  assumeV0?: boolean;
  /** Size hint for v0 maps. */
  v0Size?: number;
}

export interface CreateOptions {
  size: number;
  blocksize?: number;
}

export interface CloneOptions extends LoadOptions {
  /** New size; must be at least the snapshot's. Default: the snapshot's size. */
  size?: number;
}

/** The minimal logger a library accepts (a pino logger satisfies it). */
export interface Logger {
  debug(obj: object | string, msg?: string): void;
  info(obj: object | string, msg?: string): void;
  warn(obj: object | string, msg?: string): void;
  error(obj: object | string, msg?: string): void;
}

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};

export type { MapEntry };
