/**
 * A process that watches a lock it holds and then has nothing left to do
 * (test/release-requests.test.ts): with `close` it closes the blocker, without it it leaves the
 * watch running. Either way it must exit by itself: a release watch keeps no process alive.
 * Options come as JSON in ARCHIP_WATCH: conf, namespace, close.
 */
import { RadosBlocker } from '../../src/index.js';

const o = JSON.parse(process.env.ARCHIP_WATCH ?? '{}') as { conf: string; namespace: string; close: boolean };
const b = await RadosBlocker.open({
  cephConf: o.conf,
  pool: 'maps',
  namespace: o.namespace,
  identity: 'watcher_1',
});
await b.acquire('vol', { leaseMs: 60_000 });
b.watchRelease('vol', () => {});
await new Promise((r) => setTimeout(r, 200)); // the watch is in place
process.stdout.write('watching\n');
if (o.close) await b.close();
