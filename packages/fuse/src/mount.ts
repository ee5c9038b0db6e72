/**
 * Mounting a one-file FUSE filesystem on a regular file, finding it again, unmounting it, and
 * aborting its connection. mount(2) of type fuse takes the /dev/fuse descriptor as `fd=N` in its
 * options: we open /dev/fuse and run mount(8) with that descriptor inherited as its fd 3
 * (`-i`: no mount.fuse helper), so no native code and no libfuse/fusermount are needed.
 */
import { execFile, spawn } from 'node:child_process';
import { constants, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { ArchipelagoError } from '@archipelago/libxseg';
import { DevFuseChannel } from './channel.js';

const run = promisify(execFile);

/** The filesystem type our mounts show in /proc/mounts. */
export const FUSE_SUBTYPE = 'archipelago';
export const FUSE_CONNECTIONS = '/sys/fs/fuse/connections';

export interface FuseMountOptions {
  /** Mount read-only (the kernel refuses opens for writing with EROFS). */
  readonly?: boolean;
  /** What /proc/mounts shows as the source (default `archipelago`). */
  source?: string;
  /** Let users other than the mount's owner open the file (default false). */
  allowOther?: boolean;
}

/** A mounted file: its channel to serve, and where it is. */
export interface FuseMount {
  path: string;
  channel: DevFuseChannel;
}

function commandError(e: unknown, what: string): string {
  const err = e as NodeJS.ErrnoException & { stderr?: string };
  if (err.code === 'ENOENT') return `${what} is not installed (Debian package util-linux / mount)`;
  return (err.stderr ?? err.message).trim();
}

/**
 * Prepares `path` to be mounted on: an absolute path to a regular file, created empty (mode 0600)
 * when missing. EINVAL for a directory or any other kind of file, or a missing directory; EBUSY
 * when something is mounted there already.
 */
export async function prepareMountpoint(path: string): Promise<string> {
  const abs = resolve(path);
  const mounted = fuseMountAt(abs) ?? mountAt(abs);
  if (mounted) {
    throw new ArchipelagoError(
      'EBUSY',
      `${abs} has a filesystem mounted on it already (${mounted.fstype}); choose another --fuse path or unmount it`,
      {
        details: { path: abs },
      },
    );
  }
  let st: Awaited<ReturnType<typeof stat>> | null = null;
  try {
    st = await stat(abs);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (st === null) {
    try {
      const fh = await open(abs, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600);
      await fh.close();
    } catch (e) {
      throw new ArchipelagoError(
        'EINVAL',
        `cannot create ${abs} to mount the volume on: ${(e as Error).message}`,
        {
          cause: e,
          details: { path: abs },
        },
      );
    }
  } else if (!st.isFile()) {
    throw new ArchipelagoError(
      'EINVAL',
      `${abs} is not a regular file: a volume's FUSE file is mounted on a regular file (it is created when missing)`,
      {
        details: { path: abs },
      },
    );
  }
  return abs;
}

/**
 * Opens /dev/fuse and mounts a one-file FUSE filesystem on the regular file `path` (see
 * `prepareMountpoint`). Serve `channel` at once: the kernel's first request is INIT, and every
 * access to the file waits until it is answered.
 */
export async function mountFuseFile(path: string, opts: FuseMountOptions = {}): Promise<FuseMount> {
  if (!existsSync('/dev/fuse')) {
    throw new ArchipelagoError('ENOTSUP', 'this kernel has no /dev/fuse (modprobe fuse)', {
      details: { path },
    });
  }
  const fd = openSync('/dev/fuse', constants.O_RDWR);
  const channel = new DevFuseChannel(fd);
  const o = [
    'fd=3',
    'rootmode=100000', // S_IFREG, octal: the root is a regular file
    `user_id=${process.getuid?.() ?? 0}`,
    `group_id=${process.getgid?.() ?? 0}`,
    'default_permissions',
    ...(opts.allowOther ? ['allow_other'] : []),
    ...(opts.readonly ? ['ro'] : []),
  ].join(',');
  const args = ['-i', '-n', '-t', `fuse.${FUSE_SUBTYPE}`, '-o', o, opts.source ?? FUSE_SUBTYPE, path];
  try {
    await new Promise<void>((ok, fail) => {
      const child = spawn('mount', args, { stdio: ['ignore', 'ignore', 'pipe', fd] });
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      child.on('error', fail);
      child.on('close', (code) => {
        if (code === 0) ok();
        else fail(Object.assign(new Error(stderr.trim() || `mount exited with ${code}`), { stderr }));
      });
    });
  } catch (e) {
    channel.close();
    throw new ArchipelagoError('EIO', `cannot mount the FUSE file on ${path}: ${commandError(e, 'mount')}`, {
      cause: e,
      details: { path },
    });
  }
  return { path, channel };
}

/** A mount as /proc/self/mountinfo shows it. */
export interface MountInfo {
  /** major:minor of the filesystem; for FUSE, the minor is its connection number. */
  dev: string;
  mountpoint: string;
  fstype: string;
  source: string;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** The mounts of this process's namespace, latest last. */
export function listMounts(): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (line === '') continue;
    const f = line.split(' ');
    const dash = f.indexOf('-');
    if (dash < 0 || f.length < dash + 3) continue;
    out.push({
      dev: f[2]!,
      mountpoint: unescapeMount(f[4]!),
      fstype: f[dash + 1]!,
      source: unescapeMount(f[dash + 2]!),
    });
  }
  return out;
}

/** The topmost mount at `path`, if any. */
export function mountAt(path: string): MountInfo | null {
  const abs = resolve(path);
  return (
    listMounts()
      .filter((m) => m.mountpoint === abs)
      .pop() ?? null
  );
}

/** The topmost mount at `path` if it is one of ours (type fuse.archipelago). */
export function fuseMountAt(path: string): MountInfo | null {
  const m = mountAt(path);
  return m && m.fstype === `fuse.${FUSE_SUBTYPE}` ? m : null;
}

/**
 * Aborts the FUSE connection of the mount at `path` (fusectl's `abort`, mounting fusectl when
 * needed): every request waiting on it fails with ENOTCONN at once, and new ones too. A
 * connection whose server process died is aborted by the kernel already; this is for a server
 * that is alive but stuck. Returns false when `path` is no mount of ours.
 */
export async function abortFuseConnection(path: string): Promise<boolean> {
  const m = fuseMountAt(path);
  if (!m) return false;
  const conn = m.dev.split(':')[1]!;
  if (!existsSync(`${FUSE_CONNECTIONS}/${conn}`)) {
    try {
      await run('mount', ['-t', 'fusectl', 'fusectl', FUSE_CONNECTIONS], { timeout: 10_000 });
    } catch {
      // already mounted, or not possible here: the abort below says
    }
  }
  try {
    writeFileSync(`${FUSE_CONNECTIONS}/${conn}/abort`, '1');
    return true;
  } catch {
    return false;
  }
}

/**
 * Unmounts the FUSE file at `path`. A mount some process still uses (an open file, a loop
 * device) is refused (EBUSY) unless `lazy`, which detaches it now and lets the kernel end it at
 * its last close. Returns false when nothing of ours was mounted there.
 */
export async function unmountFuse(path: string, opts: { lazy?: boolean } = {}): Promise<boolean> {
  if (!fuseMountAt(path)) return false;
  try {
    await run('umount', [path], { timeout: 30_000 });
    return true;
  } catch (e) {
    if (!opts.lazy) {
      throw new ArchipelagoError(
        'EBUSY',
        `cannot unmount the FUSE file ${path}: ${commandError(e, 'umount')}`,
        {
          cause: e,
          details: { path },
        },
      );
    }
  }
  try {
    await run('umount', ['-l', path], { timeout: 30_000 });
  } catch (e) {
    throw new ArchipelagoError('EIO', `cannot unmount the FUSE file ${path}: ${commandError(e, 'umount')}`, {
      cause: e,
      details: { path },
    });
  }
  return true;
}
