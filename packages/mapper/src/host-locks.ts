/**
 * Host locks: one process of this host at a time changes a volume's map or holds it open.
 *
 * The blocker lock (`<vol>_lock`) separates identities (hosts); every process of one host takes
 * it as the same identity, so it cannot separate them. A host lock does: a process takes the
 * host lock of a volume before it changes the volume's map or opens it, and keeps it until it is
 * done (a one-shot command for its duration, an endpoint or a daemon while the volume is open).
 * The implementation is injected (`@archipelago/runtime`'s `FlockHostLocks`: `flock(2)` on
 * `<run dir>/host-locks/<volume>`, dropped by the kernel when its process dies), so the mapper
 * depends on no file layout.
 *
 * Semantics every implementation keeps:
 * - exclusive per name, between processes AND within one process: a second `acquire` of a name
 *   whose handle is not released yet waits or fails like one from another process;
 * - bounded: `acquire` waits at most `timeoutMs` (no wait when `wait` is false), then fails with
 *   `EBUSY` naming the holder's pid (`details: { volume, pid }`, pid null when unknown);
 * - nothing outlives its process: a killed holder's locks are free at once.
 */

export interface HostLockOptions {
  /** Wait for a holder to release it (false: fail at once when it is held). */
  wait: boolean;
  /** How long to wait at most (ms), when `wait`. */
  timeoutMs: number;
}

/** A host lock held by this process, until `release`. */
export interface HostLockHandle {
  /** The volume name it was acquired for. */
  readonly name: string;
  /** Releases the lock; a second call does nothing. */
  release(): Promise<void>;
}

export interface HostLocks {
  /**
   * Takes the host lock of volume `name`, waiting as `o` says; EBUSY when a holder keeps it
   * (`volume "v" is busy: another process of this host (pid N) is changing or holding it; ...`).
   */
  acquire(name: string, o: HostLockOptions): Promise<HostLockHandle>;
  /**
   * The pid of the process holding the host lock of `name` now, or null when it is free (-1 when
   * it is held by a process that cannot be named, as `F_OFD_GETLK` says).
   */
  holder(name: string): Promise<number | null>;
}
