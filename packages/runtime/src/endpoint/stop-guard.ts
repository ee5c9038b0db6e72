/**
 * The endpoint's stop (SIGTERM, SIGINT, `vlmc unmap`) ends within a bounded time, whatever its
 * daemons do. It drains and closes the volume as usual; with the daemon wiring that waits for
 * mapperd and blockerb, which may be restarting (`archipelago restart`: they come back within
 * seconds and the stop goes on), or gone for good (killed, the segment removed). So:
 * - the segment is gone (no peer can ever answer), or none of the peers it uses runs (killed, or
 *   `archipelago stop -f`: only a start would bring them back, and an unmap does not wait for
 *   one): the calls in flight fail at once;
 * - otherwise (a peer restarting) the stop waits up to `ARCHIPELAGO_STOP_GRACE_MS` (default
 *   10 s) for them, then fails them (`abortDaemonCalls`) and goes on;
 * - a last resort exits the process `HARD_EXIT_AFTER_MS` after the grace, whatever still runs.
 * A volume lock not released so is left to the next holder, which takes over a dead process's
 * lock by itself. `vlmc unmap` waits 30 s for the process to exit: the stop stays well inside.
 */
import type { Logger } from '@archipelago/mapper';
import { abortDaemonCalls, daemonPeers } from '../daemons-client.js';
import type { Runtime } from '../types.js';

export const STOP_GRACE_ENV = 'ARCHIPELAGO_STOP_GRACE_MS';
export const DEFAULT_STOP_GRACE_MS = 10_000;
/** After the grace, how long the stop may still take before the process exits anyway. */
export const HARD_EXIT_AFTER_MS = 5_000;
const CHECK_MS = 250;

export function stopGraceMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = env[STOP_GRACE_ENV];
  const n = v === undefined || v === '' ? Number.NaN : Number(v);
  return Number.isSafeInteger(n) && n >= 0 ? n : DEFAULT_STOP_GRACE_MS;
}

export interface StopGuard {
  /** The stop finished: the timers go. */
  done(): void;
}

/**
 * Bounds a stop that is starting now (see the file comment). `exit` ends the process (the last
 * resort); tests pass their own.
 */
export function guardStop(
  rt: Runtime,
  log: Pick<Logger, 'warn'>,
  opts: {
    graceMs?: number;
    exit?: (code: number) => void;
    /**
     * False: the stop of one volume among others (a shared endpoint process). The daemons gone
     * (segment removed, no peer running) still fail the calls at once, which hurts no one (the
     * other volumes' calls cannot succeed either); a grace running out does not (peers that
     * restart would serve the others again), nor is the process exited: the caller bounds its
     * own wait. Default true.
     */
    whole?: boolean;
  } = {},
): StopGuard {
  if (rt.wiring !== 'daemons') return { done() {} };
  const graceMs = opts.graceMs ?? stopGraceMs();
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  const t0 = Date.now();
  let aborted = false;
  const abort = (why: string) => {
    if (aborted) return;
    aborted = true;
    log.warn({ why, ms: Date.now() - t0, peers: daemonPeers(rt) }, 'stop: giving up on the daemons');
    abortDaemonCalls(rt, `the endpoint is stopping: ${why}`);
  };
  const gone = () => daemonPeers(rt).some((p) => p.state === 'segment gone');
  const peers = daemonPeers(rt);
  if (gone()) abort('the segment is gone');
  else if (peers.length > 0 && peers.every((p) => p.state !== 'running')) abort('no peer is running');
  const whole = opts.whole ?? true;
  const check = setInterval(() => {
    if (gone()) abort('the segment is gone');
    else if (!whole) {
      const now = daemonPeers(rt);
      if (now.length > 0 && now.every((p) => p.state !== 'running')) abort('no peer is running');
    } else if (Date.now() - t0 >= graceMs) abort(`the daemons did not answer within ${graceMs} ms`);
  }, CHECK_MS);
  const last = whole
    ? setTimeout(() => {
        log.warn({ ms: Date.now() - t0 }, 'stop: still not done; exiting anyway');
        exit(1);
      }, graceMs + HARD_EXIT_AFTER_MS)
    : undefined;
  check.unref();
  last?.unref();
  return {
    done() {
      clearInterval(check);
      clearTimeout(last);
    },
  };
}
