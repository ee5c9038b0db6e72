/**
 * Who holds a lock, and whether that holder is provably gone: the facts every blocker writes
 * into a lock (its record) and the one rule by which a dead holder's lock may be taken over.
 *
 * A lock is held either by a **process** (the record names it: host, kernel boot id, pid and the
 * pid's start time, and carries a lease) or by the **host** (an explicit `vlmc open` or
 * `vlmc lock`: no process, no lease; kept until released or broken by an administrator).
 * A process holder is provably dead when
 * - it ran on this host (same hostname and boot id) and its pid is gone, or now names another
 *   process (a different start time); or
 * - it ran elsewhere and its lease has expired: `expires` (the holder's wall clock) is past. The
 *   holder stops acknowledging writes `margin` before that (self-fencing), so clocks that agree
 *   within the margin are enough (docs/ARCHITECTURE.md, "Locks, leases and fencing").
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { pidAlive } from '@archipelago/libxseg';

/** The process holding a lock, as the lock records it. */
export interface LockProcess {
  /** Hostname (UTS name) of the holder: a network namespace with its own name is another host. */
  host: string;
  /** The holder's kernel boot id (/proc/sys/kernel/random/boot_id). */
  boot: string;
  pid: number;
  /** The pid's start time (field 22 of /proc/<pid>/stat), telling a reused pid apart. */
  start: string;
}

/** What a lock records about its holder (file blockers: the lock file; RADOS: the lock object). */
export interface LockRecord {
  /** The owner identity, `<hostname>_<unique_str>`: what `lockOwner` returns. */
  owner: string;
  /** The holding process, or null: held by the host itself (`vlmc open`, `vlmc lock`). */
  process: LockProcess | null;
  /** End of the lease, ms since the epoch on the holder's clock; null: no lease. */
  expires: number | null;
  /** RADOS: the holder's client address, which fencing blocklists. */
  addr?: string;
  /**
   * RADOS: the addresses of further clients that write for the holder (a `vlmc map` endpoint's
   * own data client, registered with `RadosBlocker.addClient`). Every break and take-over
   * blocklists them too, whatever the holder's own state; the holder's renewals keep them.
   * Absent in records of older versions (none).
   */
  clients?: string[];
  /**
   * The lock is held for a process other than the blocker that wrote it (a blocker peer holds
   * it for its client): cutting off the writer's client (`addr`) does not stop the holder's other
   * clients, so a break also waits its lease out.
   */
  proxied?: boolean;
  /**
   * Nobody may take this lock over before this time (ms since the epoch), even if its holder is
   * dead: a breaker that took the lock from a live holder elsewhere writes it, so that if the
   * breaker dies the old holder's lease still has to run out first.
   */
  notBefore?: number;
  /**
   * Not stored: what `renew` reports when another owner asked the holder to let the lock go
   * (`requestRelease`, the cooperative hand-over of live migration).
   */
  releaseRequested?: ReleaseRequest;
}

/** A request that the holder of a lock let it go (`Blocker.requestRelease`). */
export interface ReleaseRequest {
  /** Who asks: the requester's identity. */
  by: string;
  /** When it asked, ms since the epoch on the requester's clock. */
  at: number;
}

/** The start time of process `pid` (field 22 of its /proc stat), or null when it is gone. */
export function processStart(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null; // field 22 overall; field 3 (the state) is fields[0]
  } catch {
    return null;
  }
}

let bootId: string | null = null;

/** This kernel's boot id (stable until the next boot). */
export function currentBoot(): string {
  if (bootId === null) {
    try {
      bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      bootId = 'unknown';
    }
  }
  return bootId;
}

/** This process, as a lock records it. */
export function currentProcess(): LockProcess {
  return {
    host: hostname(),
    boot: currentBoot(),
    pid: process.pid,
    start: processStart(process.pid) ?? '0',
  };
}

/** True when `a` and `b` are the same process (same host, boot, pid and start). */
export function sameProcess(a: LockProcess | null, b: LockProcess | null): boolean {
  return (
    a !== null &&
    b !== null &&
    a.pid === b.pid &&
    a.start === b.start &&
    a.boot === b.boot &&
    a.host === b.host
  );
}

/** True when `p` ran on the host `self` runs on (same hostname, same kernel boot). */
export function sameHost(p: LockProcess, self: LockProcess): boolean {
  return p.host === self.host && p.boot === self.boot;
}

/** Why a holder is provably dead, or null when it may still be alive. */
export function deadHolder(r: LockRecord, self: LockProcess, now: number = Date.now()): string | null {
  const p = r.process;
  if (p === null) return null; // held by a host, not by a process: never taken over
  if (r.notBefore !== undefined && now <= r.notBefore) return null; // a break is still fencing
  if (sameHost(p, self)) {
    if (!pidAlive(p.pid)) return `its process ${p.pid} on ${p.host} is gone`;
    const start = processStart(p.pid);
    if (start !== null && start !== p.start) return `its pid ${p.pid} on ${p.host} is another process now`;
    return null;
  }
  if (r.expires !== null && now > r.expires)
    return `its lease expired at ${new Date(r.expires).toISOString()} (pid ${p.pid} on ${p.host})`;
  return null;
}

/** A one-line description of a holder, for messages and logs: `owner (pid 12 on host1, lease until …)`. */
export function describeHolder(r: LockRecord): string {
  const p = r.process;
  if (p === null) return `${r.owner} (held by the host, no process)`;
  const lease = r.expires === null ? 'no lease' : `lease until ${new Date(r.expires).toISOString()}`;
  return `${r.owner} (pid ${p.pid} on ${p.host}, ${lease})`;
}
