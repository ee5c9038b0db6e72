import { ArchipelagoError } from '@archipelago/libxseg';
import type { NbdExport, NbdExtent } from './types.js';

/**
 * The volume I/O an NBD export needs: the composer's method shapes, declared structurally so
 * this package does not depend on the composer (any object with these methods works).
 */
export interface VolumeBackend {
  read(volume: string, offset: number, length: number): Promise<Buffer>;
  /** Optional: reads `out.length` bytes at `offset` into `out` (the composer's readInto). */
  readInto?(volume: string, offset: number, out: Buffer): Promise<unknown>;
  write(volume: string, offset: number, data: Uint8Array, opts?: { fua?: boolean }): Promise<void>;
  writeZeroes(
    volume: string,
    offset: number,
    length: number,
    opts?: { noHole?: boolean; fua?: boolean },
  ): Promise<void>;
  trim(volume: string, offset: number, length: number): Promise<void>;
  flush(volume?: string): Promise<void>;
  blockStatus(
    volume: string,
    offset: number,
    length: number,
  ): Promise<Array<{ offset: number; length: number; zero: boolean }>>;
}

export interface VolumeExportOptions {
  /** Export name (normally the volume name). */
  name: string;
  /** The volume to serve (default: `name`). */
  volume?: string;
  size: number;
  readonly: boolean;
  /** The volume's block size: whole blocks can be zeroed fast (map entries only). */
  blocksize: number;
  description?: string;
}

const noop = (): void => {};

/**
 * Serves an Archipelago volume as an NBD export. Zero blocks are reported as holes that read as
 * zeros; trim and write-zeroes of whole blocks only change map entries (fast zero).
 */
export function volumeExport(backend: VolumeBackend, opts: VolumeExportOptions): NbdExport {
  const vol = opts.volume ?? opts.name;
  const bs = opts.blocksize;
  return {
    name: opts.name,
    description: opts.description ?? `archipelago volume ${vol}`,
    readonly: opts.readonly,
    size: () => opts.size,
    read: (offset, length) => backend.read(vol, offset, length),
    ...(backend.readInto
      ? {
          readInto: (offset: number, target: Buffer): Promise<void> =>
            backend.readInto!(vol, offset, target).then(noop),
        }
      : {}),
    write: (offset, data, o) => backend.write(vol, offset, data, o),
    flush: () => backend.flush(vol),
    trim: (offset, length) => backend.trim(vol, offset, length),
    writeZeroes: async (offset, length, o) => {
      if (o.fastZero) {
        const whole = offset % bs === 0 && (length % bs === 0 || offset + length === opts.size);
        if (o.noHole || !whole) {
          throw new ArchipelagoError(
            'ENOTSUP',
            'fast zero is only possible for whole blocks without NO_HOLE',
          );
        }
      }
      await backend.writeZeroes(vol, offset, length, { noHole: o.noHole, fua: o.fua });
    },
    blockStatus: async (offset, length): Promise<NbdExtent[]> =>
      (await backend.blockStatus(vol, offset, length)).map((e) => ({
        length: e.length,
        hole: e.zero,
        zero: e.zero,
      })),
  };
}
