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
  /**
   * The map is being built and cannot be used (the INCOMPLETE map flag): an import under way or
   * killed, or the new name of a rename that was interrupted and could not be settled yet.
   * Open, write, clone and snapshot refuse it (EBUSY); `remove` removes it.
   */
  incomplete: boolean;
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
  /**
   * Load (or open) the map even when it is INCOMPLETE: for its builder only (an import writing
   * into the volume it created with `incomplete`). Everyone else gets EBUSY for such a map.
   */
  incomplete?: boolean;
}

export interface CreateOptions {
  size: number;
  blocksize?: number;
  /**
   * Create the volume INCOMPLETE, for a builder (import): it is opened by this mapper (lock held,
   * map cached), so this mapper may write it, and nobody else may use it until `complete(name)`.
   * Killed before that, it stays incomplete: `info` says so and `remove` removes it.
   */
  incomplete?: boolean;
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

/** One entry of a map built by `createFromEntries` (reference §2.5, X_CREATE segment). */
export interface CreateEntry {
  /** Object name; the zero block's name makes a zero entry. */
  name: string;
  /** The entry is read-only (not WRITABLE). X_CREATE: XF_MAPFLAG_READONLY in the segment flags. */
  readonly?: boolean;
}

export interface CreateFromEntriesOptions {
  /** Size in bytes; the entry count must be ceil(size / blocksize). 0 is allowed (an empty file). */
  size: number;
  /** Block size; 0 or unset means 4 MiB. */
  blocksize?: number;
  /** One per block. */
  entries: readonly CreateEntry[];
  /** The map is READONLY (what Pithos always sends). */
  readonly?: boolean;
}

export interface HashOptions {
  /** Called after each block with the blocks and bytes done so far. */
  onProgress?: (blocksDone: number, blocks: number, bytesDone: number) => void;
  /** Blocks hashed at once (default: the mapper's parallelism, at most 16). */
  parallelism?: number;
}

/** What `hash` produced. */
export interface HashResult {
  /** Name of the hashed map: the Merkle root, or `<root>.<size>` when a map of another size has the root. */
  name: string;
  /** Pithos top-level hash (Merkle root) of the block hashes. */
  root: string;
  /** The block hashes, one per block (zero blocks give the zero-block name). */
  hashes: string[];
  size: number;
  blocksize: number;
  /** True when an identical hashed map was there already (nothing was written). */
  existed: boolean;
}
