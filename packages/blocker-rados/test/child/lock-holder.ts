/**
 * A lock holder in a process of its own (test/fencing.test.ts spawns it through ts-register.mjs):
 * opens a RadosBlocker with its own librados client, takes lock `volume` as a process hold with
 * lease `leaseMs`, renews it every lease/3 and writes a counter into object `<volume>_data` every
 * `writeEveryMs`. It reports on stdout, one JSON object a line: `ready` (its client address and
 * name), `wrote` (n), `write-failed` / `renew-failed` (n, code, message, fenced).
 *
 * Options come as JSON in ARCHIP_HOLDER: conf, pool, namespace, identity, volume, leaseMs,
 * writeEveryMs, `writeOnly` (no lock: it only writes `<volume>_data`, as a client writing for
 * another holder does), and `host`: hold the lock for this process as if it ran on that host (a holder
 * elsewhere, whose lock a break fences instead of refusing).
 *
 * Release requests (test/release-requests.test.ts): with `watchRelease` it watches the lock
 * (`watchRelease`) and reports each wake-up as `release-requested`; with `yieldOnRequest` it then
 * releases the lock (`released`, `how: 'watch'`) and stops writing. Times `t` are CLOCK_MONOTONIC
 * in µs (process.hrtime), comparable with the test process's.
 */
import { currentProcess } from '@archipelago/blocker';
import { ArchipelagoError } from '@archipelago/libxseg';
import { RadosBlocker } from '../../src/index.js';

interface Options {
  conf: string;
  pool: string;
  namespace: string;
  identity: string;
  volume: string;
  leaseMs: number;
  writeEveryMs: number;
  host?: string;
  watchRelease?: boolean;
  yieldOnRequest?: boolean;
  /** Take no lock: only write the counter (a client writing for another holder, test/clients.test.ts). */
  writeOnly?: boolean;
}

const o = JSON.parse(process.env.ARCHIP_HOLDER ?? '{}') as Options;
const say = (event: string, extra: Record<string, unknown> = {}) =>
  process.stdout.write(`${JSON.stringify({ event, ...extra })}\n`);
const failure = (e: unknown) =>
  ArchipelagoError.isInstance(e)
    ? { code: e.code, message: e.message, fenced: e.details.fenced === true }
    : { code: 'unknown', message: String(e), fenced: false };

const b = await RadosBlocker.open({
  cephConf: o.conf,
  pool: o.pool,
  namespace: o.namespace,
  identity: o.identity,
  leaseMs: o.leaseMs,
  opTimeoutMs: 30_000, // never hang a test: a stuck op fails (ETIMEDOUT) instead
  // This process, as if it ran on host `o.host` (its own hold, not one held for another process).
  ...(o.host === undefined ? {} : { process: { ...currentProcess(), host: o.host } }),
});
if (o.writeOnly !== true) await b.acquire(o.volume);
else await b.write(`${o.volume}_data`, 0, Buffer.from('0'.padStart(12, '0'))); // connected
say('ready', { addr: b.clientAddr, client: b.clientName, pid: process.pid });
// (a request made before the watch is in place is found once it is: watchRelease reads the lock)
const now = () => Number(process.hrtime.bigint() / 1000n);
let holding = true;
if (o.watchRelease === true) {
  b.watchRelease(o.volume, () => {
    say('release-requested', { t: now() });
    if (o.yieldOnRequest !== true || !holding) return;
    holding = false;
    b.release(o.volume).then(
      () => say('released', { how: 'watch', t: now() }),
      (e: unknown) => say('release-failed', failure(e)),
    );
  });
}

if (o.writeOnly !== true)
  setInterval(
    () => {
      b.renew(o.volume).then(
        () => {},
        (e: unknown) => say('renew-failed', failure(e)),
      );
    },
    Math.max(50, Math.floor(o.leaseMs / 3)),
  );
let n = 0;
setInterval(() => {
  if (!holding) return;
  const k = ++n;
  b.write(`${o.volume}_data`, 0, Buffer.from(String(k).padStart(12, '0'))).then(
    () => say('wrote', { n: k }),
    (e: unknown) => say('write-failed', { n: k, ...failure(e) }),
  );
}, o.writeEveryMs);
process.on('SIGTERM', () => process.exit(0));
