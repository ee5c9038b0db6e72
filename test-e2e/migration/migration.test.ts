/**
 * A real live migration between two hosts (issue 15), on the file blocker (shared directories)
 * and on RADOS (the set's cluster over the bridge):
 * - host A maps a clone (`vlmc map`) and boots the test guest from it (qemu, TCG); the guest's
 *   writer writes checksummed files on ext4;
 * - host B maps the same clone while A holds it (its endpoint serves reads without the lock) and
 *   starts `qemu -incoming tcp:<B>:<port>`;
 * - QMP `migrate` on A; the guest goes on writing on B: B's first write asks A for the volume, A
 *   hands it over (drain, flush, release) with no manual step, B takes the lock;
 * - the guest powers off on B; both hosts unmap; the clone exported: `e2fsck -fn` clean, every
 *   file the writer logged there with its checksum; the snapshot unchanged; the lock was B's.
 * The switch-over pause is printed: qemu's downtime, B's wait for the lock, and the longest stall
 * of the writer's progress around the switch.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Blocker } from '../../packages/blocker/src/index.js';
import {
  bootGuest,
  type Guest,
  guestUnavailable,
  makeGuestDisk,
  type PreparedGuest,
  prepareGuest,
  verifyGuestImage,
} from '../lib/guest.js';
import {
  type BlockerKind,
  createHosts,
  type Host,
  type Hosts,
  hostsUnavailable,
  openLockObserver,
} from '../lib/hosts.js';

const unavailable = guestUnavailable() ?? (await hostsUnavailable());
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const DISK_MIB = 32;
const MIGRATION_PORT = 4444;
const NO_ERRORS = /writer: ERROR|guest: FAILED|I\/O error|EXT4-fs error|blk_update_request/;

/** The endpoint log of `volume` mapped in `host`. */
const endpointLog = (host: Host, volume: string) =>
  readFile(join(host.runDir, `${volume}.log`), 'utf8').catch(() => '');

/** pino lines of a log whose message matches `re`. */
function logLines(text: string, re: RegExp): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      if (re.test(String(o.msg))) out.push(o);
    } catch {
      // not a log line
    }
  }
  return out;
}

for (const blocker of ['file', 'rados'] as BlockerKind[]) {
  describe.skipIf(unavailable !== null)(
    `live migration between two hosts, ${blocker} blocker${unavailable ? ` (${unavailable})` : ''}`,
    () => {
      let set: Hosts;
      let a: Host;
      let b: Host;
      let prepared: PreparedGuest;
      let baseSha: string;
      let observer: Blocker;
      const guests: Guest[] = [];

      beforeAll(async () => {
        prepared = await prepareGuest();
        set = await createHosts(['mig-a', 'mig-b'], { blocker });
        a = set.host('mig-a');
        b = set.host('mig-b');
        observer = await openLockObserver(blocker, set);
        const disk = await makeGuestDisk((...args) => a.ok(...args), set.dir, {
          volume: 'base',
          clones: ['vm'],
          sizeMiB: DISK_MIB,
        });
        baseSha = disk.imageSha256;
      }, 300_000);

      afterAll(async () => {
        for (const g of guests.splice(0)) await g.kill();
        await observer?.close();
        await set?.destroy();
      }, 120_000);

      const boot = async (host: Host, uri: string, tag: string, incoming?: string) => {
        const g = await bootGuest({
          guest: prepared,
          diskUri: uri,
          qmpSocket: join(host.dir, `${tag}.qmp`),
          ...(incoming ? { incoming } : {}),
          spawn: (cmd, args, o) => host.spawn(cmd, args, o),
        });
        guests.push(g);
        return g;
      };

      it('an explicit vlmc open on B asks the endpoint on A, which hands the volume over', async () => {
        await a.ok('create', 'openme', '--size', '8M');
        await a.ok('map', 'openme');
        expect(await observer.lockOwner('openme')).toBe('mig-a_embedded');
        const t0 = Date.now();
        const opened = await b.vlmc('open', 'openme');
        const ms = Date.now() - t0;
        expect(opened.code, opened.stderr).toBe(0);
        expect(await observer.lockOwner('openme')).toBe('mig-b_embedded');
        // A logs the hand-over once it saw B take the lock (it polls for that): wait for the line.
        const handed = async () =>
          logLines(await endpointLog(a, 'openme'), /^handed volume openme over to mig-b_embedded/);
        for (let t = Date.now(); (await handed()).length === 0 && Date.now() - t < 5000; )
          await new Promise((r) => setTimeout(r, 50));
        expect(await handed()).toHaveLength(1);
        // A's mapping still serves reads (uncached); B's hold is a host hold until `vlmc close`.
        expect((await observer.lockInfo('openme'))?.process).toBeNull();
        await b.ok('close', 'openme');
        const unmap = await a.vlmc('unmap', 'openme');
        expect(unmap.code, unmap.stderr).toBe(0);
        expect(await observer.lockOwner('openme')).toBeNull();
        console.log(
          `vlmc open on B (${blocker}): took the volume from A's endpoint in ${ms} ms (command included)`,
        );
      }, 120_000);

      it('migrates a writing guest from A to B: B maps while A holds the volume, A hands it over with no manual step, nothing is lost', {
        timeout: 420_000,
      }, async () => {
        const uriA = await a.ok('map', 'vm');
        const src = await boot(a, uriA, 'vm-a');
        let dst: Guest | null = null;
        await src.waitFor(/writer: started/, 120_000);
        // The writer's progress ("writer: N files" every 5 files), sampled: the longest stall
        // around the switch is the pause the guest saw.
        const progress: Array<{ t: number; files: number }> = [];
        const sampler = setInterval(() => {
          const files = Math.max(src.files, dst?.files ?? 0);
          if (progress.length === 0 || progress[progress.length - 1]!.files !== files)
            progress.push({ t: Date.now(), files });
        }, 10);
        expect(await observer.lockOwner('vm')).toBe('mig-a_embedded');

        // B maps the volume A holds: allowed (reads uncached, writes ask for it).
        const mapB = await b.vlmc('map', 'vm');
        expect(mapB.code, mapB.stderr).toBe(0);
        const uriB = mapB.stdout.trim();
        expect(uriB).toMatch(/^nbd\+unix:\/\//);
        expect(await observer.lockOwner('vm'), 'mapping on B takes nothing from A').toBe('mig-a_embedded');

        const incoming = `tcp:${b.addr}:${MIGRATION_PORT}`;
        dst = await boot(b, uriB, 'vm-b', incoming);
        expect(await dst.qmp.queryStatus()).toMatchObject({ status: 'inmigrate', running: false });
        await src.waitFiles(25, 120_000);

        let info: Awaited<ReturnType<typeof src.qmp.waitMigration>>;
        let switchedAt: number;
        const migrateAt = Date.now();
        try {
          await src.qmp.migrate(incoming);
          info = await src.qmp.waitMigration(120_000);
          switchedAt = Date.now();
          expect(await src.qmp.queryStatus()).toMatchObject({ status: 'postmigrate', running: false });
          // The source reports "completed" once it sent the last state; the destination runs
          // once it has loaded it (a moment later, longer on a loaded machine).
          const dstUp = Date.now();
          let dstStatus = await dst.qmp.queryStatus();
          while (dstStatus.status === 'inmigrate' && Date.now() - dstUp < 30_000) {
            await new Promise((r) => setTimeout(r, 50));
            dstStatus = await dst.qmp.queryStatus();
          }
          expect(dstStatus).toMatchObject({ status: 'running', running: true });
          await src.qmp.quit();
          await src.exited;
          const atSwitch = src.files;
          await dst.waitFiles(atSwitch + 15, 180_000);
        } finally {
          clearInterval(sampler);
        }

        // The lock is B's, and A gave it up by itself.
        expect(await observer.lockOwner('vm')).toBe('mig-b_embedded');
        const logA = await endpointLog(a, 'vm');
        const logB = await endpointLog(b, 'vm');
        const handed = logLines(logA, /^handed volume vm over to mig-b_embedded/);
        expect(handed.length, `A's endpoint log:\n${logA}`).toBe(1);
        const took = logLines(logB, /^took volume vm over from mig-a_embedded/);
        expect(took.length, `B's endpoint log:\n${logB}`).toBe(1);

        const files = await dst.stopWriter(120_000);
        expect(src.serial).not.toMatch(NO_ERRORS);
        expect(dst.serial).not.toMatch(NO_ERRORS);
        const unmapB = await b.vlmc('unmap', 'vm');
        expect(unmapB.code, unmapB.stderr).toBe(0);
        const unmapA = await a.vlmc('unmap', 'vm');
        expect(unmapA.code, unmapA.stderr).toBe(0);
        expect(logLines(await endpointLog(a, 'vm'), /close failed/)).toEqual([]);
        expect(await observer.lockOwner('vm'), 'both unmapped: free').toBeNull();

        // Every file the guest logged reads back; the file system is clean; the snapshot unchanged.
        const raw = join(set.dir, 'vm.raw');
        await b.ok('export', 'vm', raw);
        const report = await verifyGuestImage(raw);
        expect(report.last).toBe(files - 1);
        expect(report.files + report.removed).toBe(files);
        const snap = join(set.dir, 'base-snap.raw');
        await a.ok('export', 'base-snap', snap);
        expect(sha(await readFile(snap))).toBe(baseSha);

        // The pause: qemu's downtime, B's wait for the lock, the writer's longest stall near the switch.
        const gaps = progress.slice(1).map((p, i) => ({ at: p.t, ms: p.t - progress[i]!.t }));
        const before = gaps.filter((g) => g.at < migrateAt).map((g) => g.ms);
        const around = gaps.filter((g) => g.at >= migrateAt && g.at <= switchedAt + 10_000);
        const stall = Math.max(0, ...around.map((g) => g.ms));
        const median = before.sort((x, y) => x - y)[Math.floor(before.length / 2)] ?? 0;
        console.log(
          `migration (${blocker}): qemu downtime ${info.downtime} ms, total ${info['total-time']} ms; ` +
            `B waited ${took[0]?.ms} ms for the lock, A handed over in ${handed[0]?.ms} ms; ` +
            `writer: longest stall around the switch ${stall} ms (median ${median} ms per 5 files before the switch); ` +
            `${files} files, ${report.files} on the disk`,
        );
      });
    },
  );
}
