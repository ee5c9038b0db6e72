/**
 * Loop devices over a FUSE file (losetup, util-linux): a kernel block device for mkfs, mount and
 * fsck on kernels without the nbd or ublk modules.
 */
import { execFile } from 'node:child_process';
import { closeSync, constants, existsSync, openSync, readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { promisify } from 'node:util';
import { ArchipelagoError } from '@archipelago/libxseg';

const run = promisify(execFile);

function why(e: unknown): string {
  const err = e as NodeJS.ErrnoException & { stderr?: string };
  if (err.code === 'ENOENT') return 'losetup is not installed (Debian package mount)';
  return (err.stderr ?? err.message).trim();
}

/** `/dev/loopN` names only. */
export function isLoopDevice(device: string): boolean {
  return /^\/dev\/loop[0-9]+$/.test(device);
}

export interface AttachLoopOptions {
  readonly?: boolean;
  /** A specific `/dev/loopN` (default: the first free one). */
  device?: string;
  /** Try direct I/O (default true): no second page cache over the FUSE file. */
  directIo?: boolean;
}

/** The result of attaching: the device, and whether direct I/O is on. */
export interface LoopAttachment {
  device: string;
  directIo: boolean;
}

/**
 * Attaches `file` to a loop device and returns it. Direct I/O is asked for first, and dropped
 * when the kernel refuses it (logical block size, a backing file without O_DIRECT).
 */
export async function attachLoop(file: string, opts: AttachLoopOptions = {}): Promise<LoopAttachment> {
  if (opts.device !== undefined && !isLoopDevice(opts.device)) {
    throw new ArchipelagoError('EINVAL', `${opts.device} is not a loop device (/dev/loopN)`, {
      details: { device: opts.device },
    });
  }
  const target = opts.device ? [opts.device] : ['-f', '--show'];
  const ro = opts.readonly ? ['-r'] : [];
  const tries = opts.directIo === false ? [false] : [true, false];
  let last: unknown;
  for (const dio of tries) {
    try {
      const { stdout } = await run('losetup', [...ro, `--direct-io=${dio ? 'on' : 'off'}`, ...target, file], {
        timeout: 30_000,
      });
      const device = opts.device ?? stdout.trim();
      return { device, directIo: dio && loopDirectIo(device) };
    } catch (e) {
      last = e;
      // losetup may have attached the device and failed only to switch direct I/O on.
      const dev = opts.device ?? (await loopOf(file));
      if (dev) await detachLoop(dev).catch(() => {});
    }
  }
  throw new ArchipelagoError('EIO', `cannot attach ${file} to a loop device: ${why(last)}`, {
    cause: last,
    details: { file, ...(opts.device ? { device: opts.device } : {}) },
  });
}

/** The loop device backed by `file`, if one is. */
export async function loopOf(file: string): Promise<string | null> {
  try {
    const { stdout } = await run('losetup', ['-n', '-O', 'NAME', '-j', file], { timeout: 10_000 });
    return stdout.split('\n')[0]?.trim() || null;
  } catch {
    return null;
  }
}

/** The file backing `device` as the kernel names it, or null when it is not attached. */
export function loopBackingFile(device: string): string | null {
  try {
    return readFileSync(`/sys/block/${basename(device)}/loop/backing_file`, 'utf8').trim();
  } catch {
    return null;
  }
}

function loopDirectIo(device: string): boolean {
  try {
    return readFileSync(`/sys/block/${basename(device)}/loop/dio`, 'utf8').trim() === '1';
  } catch {
    return false;
  }
}

/**
 * True when `device` is in use by something that holds it exclusively: a mounted filesystem, a
 * device-mapper or md stack over it (an open with O_EXCL fails with EBUSY).
 */
export function loopInUse(device: string): boolean {
  if (!existsSync(device)) return false;
  let fd: number;
  try {
    fd = openSync(device, constants.O_RDONLY | constants.O_EXCL);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EBUSY';
  }
  closeSync(fd);
  return false;
}

/**
 * Detaches a loop device (losetup -d). Refused with EBUSY while it is mounted or held (the
 * kernel would only mark it to detach at its last close).
 */
export async function detachLoop(device: string): Promise<void> {
  if (loopBackingFile(device) === null) return; // not attached (any more)
  if (loopInUse(device)) {
    throw new ArchipelagoError(
      'EBUSY',
      `${device} is in use (mounted, or held by another device); unmount it first`,
      {
        details: { device },
      },
    );
  }
  try {
    await run('losetup', ['-d', device], { timeout: 30_000 });
  } catch (e) {
    throw new ArchipelagoError('EIO', `cannot detach ${device}: ${why(e)}`, {
      cause: e,
      details: { device },
    });
  }
}
