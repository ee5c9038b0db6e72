/**
 * The NBD endpoint restarted under a connected client (issue 15, "Restarts under mapped volumes"):
 * qemu-io on qemu's nbd driver with `reconnect-delay` writes a pattern slot after slot while the
 * endpoint of the volume is killed with kill -9 and `vlmc map` starts it again on the same socket
 * (the run directory's default one, or a custom `--socket` path). qemu reconnects and resends what
 * was in flight: no command fails, every write reads back (through the reconnected client and a
 * fresh one), the new endpoint holds the lock (embedded: taken over from the dead process;
 * daemons: mapperd's, as before), and `vlmc unmap` afterwards leaves no lock and no socket.
 *
 * Embedded wiring (the default) and the daemons (`archipelago start`). The stall the client saw is
 * printed: its longest write, and the time from the kill to the first write answered after it.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { requireTool, sh } from '../lib/vlmc.js';
import {
  killAndRemap,
  lockRecord,
  type Mode,
  makeTarget,
  mapOk,
  type Op,
  QemuIo,
  type Restart,
  sleep,
  stallOf,
  type Target,
} from './helpers.js';

const VOLUME = 'rvol';
const SLOTS = 128;
const SLOT = 64 * 1024;
/** Slots 512 KiB apart: the writes spread over the 16 objects of the 64 MiB volume. */
const STRIDE = 512 * 1024;
const RECONNECT_DELAY_S = 20;
/** When the endpoint is killed, after the writes started. */
const KILL_AFTER_MS = 700;

let t: Target | undefined;
let q: QemuIo | undefined;
afterEach(async () => {
  q?.kill();
  q = undefined;
  await t?.dispose();
  t = undefined;
});

const cases: Array<[Mode, 'default' | 'custom']> = [
  ['embedded', 'default'],
  ['embedded', 'custom'],
  ['daemons', 'default'],
  ['daemons', 'custom'],
];

describe.each(cases)('endpoint restart (%s wiring, %s socket) under qemu-io', (mode, socketKind) => {
  it('qemu-io with reconnect-delay sees no error across kill -9 + vlmc map; every write reads back', {
    timeout: 180_000,
  }, async () => {
    requireTool('qemu-io', 'qemu-utils');
    t = await makeTarget(mode);
    const target = t;
    const created = await target.vlmc('create', VOLUME, '--size', '64M');
    expect(created.code, created.stderr).toBe(0);
    const mapArgs: string[] = [];
    if (socketKind === 'custom') {
      mkdirSync(join(target.dir, 'vm'), { recursive: true });
      mapArgs.push('--socket', join(target.dir, 'vm', 'disk.sock'));
    }
    const first = await mapOk(target, VOLUME, ...mapArgs);
    const socket = first.socket as string;
    expect(socket).toBe(socketKind === 'custom' ? mapArgs[1] : join(target.runDir, `${VOLUME}.sock`));

    q = QemuIo.open(socket, VOLUME, RECONNECT_DELAY_S);
    const qio = q;
    const expected = new Map<number, number>();
    const ops: Op[] = [];
    const failures: string[] = [];
    let restart: Restart | undefined;
    let restartError: unknown;
    const began = Date.now();
    const timer = setTimeout(() => {
      killAndRemap(target, VOLUME, first.pid, ...mapArgs).then(
        (r) => {
          restart = r;
        },
        (e: unknown) => {
          restartError = e;
        },
      );
    }, KILL_AFTER_MS);
    try {
      for (let i = 0; ; i++) {
        const slot = i % SLOTS;
        const pattern = (i % 250) + 1;
        const r = await qio.cmd(`write -P ${pattern} ${slot * STRIDE} ${SLOT}`);
        ops.push(r);
        if (r.ok) expected.set(slot, pattern);
        else failures.push(r.text.trim());
        if (restartError) throw restartError;
        const after = restart
          ? ops.filter((o) => o.start > (restart as Restart).killAt + (restart as Restart).downMs)
          : [];
        if (after.length >= 40) break;
        if (Date.now() - began > 90_000) throw new Error('no restart within 90 s');
      }
    } finally {
      clearTimeout(timer);
    }
    const r = restart as Restart;
    expect(failures).toEqual([]);
    expect(r.entry.socket).toBe(socket);
    expect(r.entry.pid).not.toBe(first.pid);

    // Every slot reads back through the reconnected client...
    const bad: string[] = [];
    for (const [slot, pattern] of expected) {
      const rd = await qio.cmd(`read -P ${pattern} ${slot * STRIDE} ${SLOT}`);
      if (!rd.ok) bad.push(`slot ${slot}: ${rd.text.trim()}`);
    }
    expect(bad).toEqual([]);
    expect(await qio.quit()).toBe(0);
    expect(qio.stderr).toBe('');
    q = undefined;
    // ...and through a fresh one.
    const reads = [...expected].flatMap(([slot, p]) => ['-c', `read -P ${p} ${slot * STRIDE} ${SLOT}`]);
    const fresh = await sh('/usr/bin/qemu-io', ['-r', '-f', 'raw', r.entry.uri, ...reads]);
    expect(fresh.code, fresh.stderr).toBe(0);
    expect(fresh.stdout).not.toMatch(/failed|verification/i);
    expect(fresh.stdout.match(/^read 65536\/65536/gm)?.length).toBe(expected.size);

    // The new endpoint holds the volume: embedded, it took the dead process's lock over.
    const maps = join(target.dir, 'maps');
    if (mode === 'embedded') {
      expect(lockRecord(maps, VOLUME)?.process?.pid).toBe(r.entry.pid);
      const log = readFileSync(join(target.runDir, `${VOLUME}.log`), 'utf8');
      expect(log).toContain(`its process ${first.pid} on`);
      expect(log).toMatch(/took over the lock of volume rvol/);
    } else {
      expect(lockRecord(maps, VOLUME)?.process?.pid).toBe(target.daemonPid('mapperd'));
    }

    const stall = stallOf(ops, r.killAt);
    console.log(
      `endpoint restart (${mode}, ${socketKind} socket), qemu-io reconnect-delay=${RECONNECT_DELAY_S}: ` +
        `${ops.length} writes, 0 errors, ${expected.size} slots read back; endpoint down ${r.downMs} ms ` +
        `(vlmc map ${r.mapMs} ms); client stall: longest write ${stall.longestMs} ms, ` +
        `kill -> first write answered ${stall.firstAfterKillMs} ms`,
    );
    expect(stall.longestMs).toBeLessThan(RECONNECT_DELAY_S * 1000);

    const un = await target.vlmc('unmap', VOLUME);
    expect(un.code, un.stderr).toBe(0);
    for (let i = 0; i < 100 && lockRecord(maps, VOLUME) !== null; i++) await sleep(50);
    expect(lockRecord(maps, VOLUME)).toBeNull();
    expect(existsSync(socket)).toBe(false);
    expect(
      readdirSync(target.runDir).filter((n) => n.startsWith(`${VOLUME}.`) && n !== `${VOLUME}.log`),
    ).toEqual([]);
  });
});
