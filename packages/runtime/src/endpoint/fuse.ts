/**
 * The FUSE endpoint: `vlmc map NAME --fuse PATH [--device loop|/dev/loopN]`. The endpoint process
 * serves the volume as the regular file PATH (a one-file FUSE mount, @archipelago/fuse) beside its
 * NBD export; reads and writes go to the same composer the NBD export uses. `--device` then puts
 * a loop device over the file: a kernel block device on kernels without nbd or ublk.
 *
 * Order of teardown: the loop device first (by `vlmc unmap`, refused while it is mounted), then
 * the FUSE mount (by the endpoint as it stops), then the volume. An endpoint killed with kill -9
 * leaves the mount (its connection aborted by the kernel: I/O on it fails at once) and the loop
 * device; `vlmc unmap` (or a new `vlmc map`) of the volume clears both.
 */
import {
  abortFuseConnection,
  attachLoop,
  detachLoop,
  type FuseFileBackend,
  type FuseLogger,
  fuseMountAt,
  isLoopDevice,
  type LoopAttachment,
  loopBackingFile,
  prepareMountpoint,
  type ServedFile,
  serveFuseFile,
  unmountFuse,
} from '@archipelago/fuse';
import { ArchipelagoError } from '@archipelago/libxseg';
import type { Runtime } from '../types.js';
import type { MappedEntry } from './runstate.js';

/** The volume's bytes as a FUSE file's: the composer, as the NBD export reaches it. */
export function volumeFile(rt: Runtime, volume: string, size: number, readonly: boolean): FuseFileBackend {
  const c = rt.composer;
  return {
    size,
    readonly,
    readInto: c.readInto
      ? (offset, out) => c.readInto!(volume, offset, out)
      : async (offset, out) => (await c.read(volume, offset, out.length)).copy(out),
    write: (offset, data) => c.write(volume, offset, data),
    flush: () => c.flush(volume),
    writeZeroes: (offset, length) => c.writeZeroes(volume, offset, length),
  };
}

/** Mounts the volume's file at `path` and serves it, in the endpoint process. */
export function serveVolumeFile(
  rt: Runtime,
  opts: { volume: string; size: number; readonly: boolean; path: string; logger?: FuseLogger },
): Promise<ServedFile> {
  return serveFuseFile(opts.path, volumeFile(rt, opts.volume, opts.size, opts.readonly), {
    source: `archipelago:${opts.volume}`,
    readers: 4,
    ...(opts.logger ? { logger: opts.logger } : {}),
  });
}

/**
 * Checks a `vlmc map --fuse PATH` request before the endpoint starts: PATH made absolute and a
 * regular file (created when missing), nothing mounted on it; `device`, if given, `loop` (the
 * first free loop device) or `/dev/loopN`.
 */
export async function checkFuseRequest(path: string, device: string | undefined): Promise<string> {
  if (device !== undefined && device !== 'loop' && !isLoopDevice(device)) {
    throw new ArchipelagoError(
      'EINVAL',
      `with --fuse, --device is "loop" (the first free loop device) or /dev/loopN, not ${device}`,
      { details: { device } },
    );
  }
  return prepareMountpoint(path);
}

/** Attaches a loop device over a mapped volume's FUSE file (`device`: `loop` or `/dev/loopN`). */
export function attachFuseDevice(entry: MappedEntry, device: string): Promise<LoopAttachment> {
  if (!entry.fuse) throw new ArchipelagoError('EINVAL', `"${entry.volume}" has no FUSE file to attach`);
  return attachLoop(entry.fuse, {
    readonly: entry.readonly,
    ...(device === 'loop' ? {} : { device }),
  });
}

/**
 * The vlmc-side half of unmapping a FUSE map: detaches its loop device (EBUSY while it is mounted:
 * nothing is touched then). For a stale map (its endpoint died) it also aborts what is left of
 * the FUSE connection and unmounts the file, which a live endpoint does itself as it stops.
 */
export async function releaseFuse(entry: MappedEntry & { alive: boolean }): Promise<void> {
  const path = entry.fuse;
  if (entry.device && path && loopBackingFile(entry.device) === path) await detachLoop(entry.device);
  if (entry.alive || !path) return;
  if (fuseMountAt(path)) {
    await abortFuseConnection(path);
    await unmountFuse(path, { lazy: true });
  }
}
