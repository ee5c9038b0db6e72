/**
 * Running as `[ARCHIPELAGO] USER`/`GROUP`: looking the account up, making the directories a
 * service writes into (mode 2770, owned by the account when made as root, so that files made
 * there later by anyone are group-owned), switching a root process to the account, and checking
 * afterwards that it can still reach what it needs. Light on purpose (no addon, no logger): the
 * runtime imports it to check a configuration before anything is spawned.
 */
import { execFileSync } from 'node:child_process';
import { accessSync, chmodSync, chownSync, constants, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { ArchipelagoError } from '@archipelago/libxseg';

/** The account a service runs as: USER's uid, GROUP's gid. */
export interface Account {
  user: string;
  uid: number;
  group: string;
  gid: number;
}

/** Mode of the directories made for an account: rwx for user and group, setgid, nothing for others. */
export const SERVICE_DIR_MODE = 0o2770;

/** True when this process can switch accounts (effective uid 0). */
export function isRoot(): boolean {
  return process.geteuid?.() === 0;
}

/** One entry of the account databases (NSS through `getent`, else the flat files). */
function lookup(db: 'passwd' | 'group', name: string): string[] | null {
  if (name === '' || name.includes(':') || name.includes('\n')) return null;
  try {
    const line = execFileSync('getent', [db, name], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const first = line.split('\n')[0];
    return first ? first.split(':') : null;
  } catch (e) {
    // getent exits 2 for "not found"; without getent, read the files.
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') return null;
  }
  try {
    for (const line of readFileSync(`/etc/${db}`, 'utf8').split('\n')) {
      const f = line.split(':');
      if (f[0] === name || (/^\d+$/.test(name) && f[2] === name)) return f;
    }
  } catch {
    // no file
  }
  return null;
}

/** USER's uid and primary gid, or null when there is no such user. */
export function lookupUser(name: string): { uid: number; gid: number } | null {
  const f = lookup('passwd', name);
  if (!f || f.length < 4) return null;
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

/** GROUP's gid, or null when there is no such group. */
export function lookupGroup(name: string): number | null {
  const f = lookup('group', name);
  return f && f.length >= 3 ? Number(f[2]) : null;
}

/**
 * The account of `user`/`group`; a missing one is EINVAL_CONFIG naming the key (`USER`, `GROUP`)
 * and `where` (the file and section, e.g. "/etc/archipelago/archipelago.conf: [ARCHIPELAGO]").
 */
export function resolveAccount(user: string, group: string, where: string): Account {
  const u = lookupUser(user);
  if (!u)
    throw new ArchipelagoError(
      'EINVAL_CONFIG',
      `${where} USER = ${user}: no such user on this host; create it (as root: scripts/install.sh creates "archipelago", or "useradd --system ${user}"), or name an existing user`,
      { details: { key: 'USER', user, where } },
    );
  const gid = lookupGroup(group);
  if (gid === null)
    throw new ArchipelagoError(
      'EINVAL_CONFIG',
      `${where} GROUP = ${group}: no such group on this host; create it ("groupadd --system ${group}"), or name an existing group`,
      { details: { key: 'GROUP', group, where } },
    );
  return { user, uid: u.uid, group, gid };
}

/**
 * `mkdir -p path`; every directory it makes gets mode 2770 and, when this process is root and an
 * account is given, that owner. Directories that exist are left as they are. Returns the
 * directories made, top first.
 */
export function makeServiceDir(path: string, account: Account | null): string[] {
  const made: string[] = [];
  let p = path;
  for (;;) {
    try {
      statSync(p);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    made.unshift(p);
    const up = dirname(p);
    if (up === p) break;
    p = up;
  }
  for (const d of made) {
    try {
      mkdirSync(d, { mode: 0o770 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      continue; // made meanwhile by someone else: theirs
    }
    if (account && isRoot()) chownSync(d, account.uid, account.gid);
    chmodSync(d, SERVICE_DIR_MODE);
  }
  return made;
}

/** Applies a umask (the section's `umask`, else `[ARCHIPELAGO] UMASK`); returns the previous one. */
export function applyUmask(mask: number | undefined): number {
  return mask === undefined ? process.umask() : process.umask(mask);
}

export type SwitchResult =
  /** The process now runs as the account. */
  | 'switched'
  /** Not root: a process that is not root cannot switch; it goes on as it is. */
  | 'not root'
  /** Already the account (USER root, GROUP root, started as root). */
  | 'unchanged';

/**
 * Switches a root process to the account: supplementary groups of USER (initgroups, with GROUP
 * added), then GROUP, then USER, in that order (after setuid nothing else could be changed).
 * A process that is not root is left as it is. Throws when the switch did not take.
 */
export function switchAccount(account: Account): SwitchResult {
  if (!isRoot()) return 'not root';
  if (account.uid === 0 && account.gid === 0) return 'unchanged';
  // initgroups(3) (USER's groups from the account databases) is in Node, not in its typings.
  const p = process as NodeJS.Process & {
    initgroups?: (user: string | number, extraGroup: string | number) => void;
  };
  if (!p.initgroups || !p.setgid || !p.setuid) return 'not root'; // not POSIX
  p.initgroups(account.user, account.gid);
  p.setgid(account.gid);
  if (account.uid !== 0) p.setuid(account.uid);
  if (process.getegid?.() !== account.gid || process.geteuid?.() !== account.uid)
    throw new ArchipelagoError(
      'EIO',
      `could not switch to user ${account.user} (${account.uid}) and group ${account.group} (${account.gid})`,
    );
  return 'switched';
}

/**
 * After the switch: each directory must be readable, writable and searchable by this process;
 * otherwise EINVAL_CONFIG naming the key, the directory and the account, with what to do.
 */
export function checkServiceDirs(
  dirs: ReadonlyArray<{ key: string; path: string }>,
  account: Account | null,
): void {
  for (const { key, path } of dirs) {
    try {
      accessSync(path, constants.R_OK | constants.W_OK | constants.X_OK);
    } catch (e) {
      const who = account
        ? `user ${account.user} (group ${account.group})`
        : `uid ${process.getuid?.()} (gid ${process.getgid?.()})`;
      throw new ArchipelagoError(
        'EINVAL_CONFIG',
        `${key} ${path}: ${who} cannot read and write it (${(e as NodeJS.ErrnoException).code}); give the user or the group access to it and to every directory above it (e.g. chgrp -R ${account?.group ?? 'GROUP'} and chmod g+rwXs), or set [ARCHIPELAGO] USER/GROUP to an account that has it`,
        { details: { key, path, code: (e as NodeJS.ErrnoException).code } },
      );
    }
  }
}
