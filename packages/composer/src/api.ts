/**
 * `VolumeApi`: volume I/O and the frozen operations, as an interface. `Composer` implements it in
 * process; `SegmentVolumes` (`@archipelago/peer`) implements it over the segment, talking to a
 * vlmcd peer. The NBD export and the `vlmc` commands accept either.
 */
import type { VolumeInfo } from '@archipelago/mapper';

export interface WriteOptions {
  /** Force unit access: durable before the promise resolves, also on a write-back blocker. */
  fua?: boolean;
}

export interface ZeroOptions extends WriteOptions {
  /** Write real zeros instead of turning whole blocks back into the zero block. */
  noHole?: boolean;
}

/** One extent of `blockStatus`. */
export interface Extent {
  offset: number;
  length: number;
  /** No object backs it: reads are zeros and cost nothing. */
  zero: boolean;
}

export interface VolumeApi {
  /** Reads `length` bytes at `offset`. */
  read(name: string, offset: number, length: number): Promise<Buffer>;
  /**
   * Optional: reads `out.length` bytes at `offset` into `out` and resolves with it, so a
   * streaming reader (export) can reuse a few warm buffers.
   */
  readInto?(name: string, offset: number, out: Buffer): Promise<Buffer>;
  /** Writes `data` at `offset`; shared blocks are copied up first. */
  write(name: string, offset: number, data: Uint8Array, opts?: WriteOptions): Promise<void>;
  /** Makes a range read as zeros (whole blocks return to the zero block unless `noHole`). */
  writeZeroes(name: string, offset: number, length: number, opts?: ZeroOptions): Promise<void>;
  trim(name: string, offset: number, length: number): Promise<void>;
  /** Makes every acknowledged write durable (and is a barrier for the volume's I/O). */
  flush(name?: string): Promise<void>;
  /** Data and zero extents of a range. */
  blockStatus(name: string, offset: number, length: number): Promise<Extent[]>;
  /** Runs `fn` with the volume frozen (in-flight I/O drained first). */
  frozen<T>(name: string, fn: () => Promise<T>): Promise<T>;
  snapshot(name: string, snap: string): Promise<VolumeInfo>;
  close(name: string): Promise<void>;
  remove(name: string): Promise<void>;
  /** Size of a volume in bytes. */
  size(name: string): Promise<number>;
}
