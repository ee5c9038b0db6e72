/**
 * The calls a blocker has in flight, so that close() can refuse new ones (with the blocker's own
 * ECLOSED error) and wait for those already running before it releases what they use.
 */
export class CallGate {
  private active = 0;
  private shut = false;
  private onIdle: (() => void) | null = null;

  constructor(private readonly closedError: () => Error) {}

  /** True once close() was called. */
  get closed(): boolean {
    return this.shut;
  }

  /** Throws the closed error after close(); counts the call otherwise. Pair with leave(). */
  enter(): void {
    if (this.shut) throw this.closedError();
    this.active++;
  }

  leave(): void {
    this.active--;
    if (this.active === 0 && this.onIdle) {
      const r = this.onIdle;
      this.onIdle = null;
      r();
    }
  }

  /** Refuses new calls from now on (synchronously). */
  close(): void {
    this.shut = true;
  }

  /** Resolves once no call is in flight. */
  drained(): Promise<void> {
    return this.active === 0 ? Promise.resolve() : new Promise<void>((r) => (this.onIdle = r));
  }
}
