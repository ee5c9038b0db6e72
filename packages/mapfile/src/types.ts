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

/**
 * What an interrupted multi-step operation meant, stored after a v2 header (FORMAT.md, "Intent
 * record") so that the next operation can finish or undo it. A rename writes `renamed-from` on the
 * new name's INCOMPLETE map, then `renamed-to` on the old name's DELETED header (the commit).
 */
export interface MapIntent {
  /** `rolling-back`: a rollback committed on this (INCOMPLETE) map; `name` is the staged map to copy. */
  kind: 'renamed-from' | 'renamed-to' | 'rolling-back';
  /** The other map of the rename (or the staged map of a rollback). */
  name: string;
  /** That map's epoch (renamed-from: the old map's; renamed-to: the new map's; rolling-back: the staged map's). */
  epoch: bigint;
}
