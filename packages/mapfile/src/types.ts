/** A decoded map header. v0 and v1 maps get a synthesized header (they store no blocksize, flags or epoch). */
export interface MapHeader {
  version: 0 | 1 | 2;
  /** Volume size in bytes (at most Number.MAX_SAFE_INTEGER). */
  size: number;
  /** Bytes per object. */
  blocksize: number;
  /** Map flags word (see MapFlag). */
  flags: number;
  /** u64 epoch used in data-object names. */
  epoch: bigint;
}

/** One map node: the object that backs one block of the volume, and its persistent flags (see ObjFlag). */
export interface MapEntry {
  name: string;
  flags: number;
}
