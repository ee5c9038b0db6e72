/**
 * Same-host serialization: a per-volume lock among the processes of one host (the blocker lock
 * cannot tell them apart: they share the host's identity). The mapper takes it, injected, before
 * it opens a volume or changes a map; the runtime gives the flock-based implementation.
 */

/** A host lock held by this process. */
export interface HostLockHandle {
  readonly name: string;
  /** Lets the lock go (idempotent). */
  release(): Promise<void>;
}

export interface HostLocks {
  /**
   * Takes the host lock of volume `name` for this process. Without `wait`, or once `timeoutMs`
   * has passed, fails with EBUSY naming the pid of the process holding it.
   */
  acquire(name: string, o: { wait: boolean; timeoutMs: number }): Promise<HostLockHandle>;
  /** The pid of the live process holding the host lock of `name`, or null. */
  holder(name: string): Promise<number | null>;
}
