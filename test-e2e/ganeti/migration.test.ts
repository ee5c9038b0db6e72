/**
 * The Ganeti ExtStorage provider on two nodes (test-e2e/lib/hosts.ts: two network and UTS
 * namespaces sharing the file blocker's directories), each script run as Ganeti's node daemon
 * runs it (packages/ganeti-extstorage/test/ganeti.ts: environment only, the node's own
 * /etc/archipelago/archipelago.conf), in the order Ganeti's live migration calls them
 * (lib/cmdlib/instance_migration.py): the disk attached and written on node A; B attaches the
 * same volume while A has it; both opened shared; the instance's writes move to B (B's endpoint
 * asks A's for the lock: the hand-over); A closes and detaches; B opens exclusive. Every byte
 * written on either side reads back on B, and the lock ends B's.
 */
import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ganetiUnavailable,
  kvmUri,
  nodeEtc,
  runScript,
  type ScriptResult,
} from '../../packages/ganeti-extstorage/test/ganeti.js';
import { createHosts, type Host, type Hosts, hostsUnavailable } from '../lib/hosts.js';

const unavailable = (await hostsUnavailable()) ?? (await ganetiUnavailable());

describe.skipIf(unavailable !== null)(
  `Ganeti live migration of an archipelago disk${unavailable ? ` (${unavailable})` : ''}`,
  () => {
    let set: Hosts;
    let a: Host;
    let b: Host;
    const etc = new Map<string, string>();
    const vol = '9d2e4b1a-0c3f-4e8a-b5d6-1f2a3b4c5d6e.ext.disk0';

    beforeAll(async () => {
      set = await createHosts(['gnt-a', 'gnt-b']);
      a = set.host('gnt-a');
      b = set.host('gnt-b');
      // Each node's configuration where an installed node has it.
      const { readFile } = await import('node:fs/promises');
      for (const h of [a, b]) etc.set(h.name, await nodeEtc(h.dir, await readFile(h.confs.file, 'utf8')));
    });

    afterAll(async () => {
      await set?.destroy();
    });

    const script = (h: Host, action: Parameters<typeof runScript>[0], vars: Record<string, string> = {}) =>
      runScript(action, { VOL_NAME: vol, ...vars }, { etc: etc.get(h.name) as string, enter: h.enter });
    const ok = (r: ScriptResult) => {
      expect(r, r.stderr).toMatchObject({ code: 0 });
      return r.stdout;
    };
    /** qemu-io inside host `h` on `uri`. */
    const qemuIo = (h: Host, uri: string, ...cmds: string[]) =>
      new Promise<ScriptResult>((resolve) =>
        execFile(
          h.enter[0] as string,
          [...h.enter.slice(1), 'qemu-io', '-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri],
          (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr }),
        ),
      );
    const lockOwner = async (h: Host) =>
      ((await h.vlmc('info', vol, '--json')).json as { lockOwner: string | null }).lockOwner;

    it('attach on the second node while the first has the disk, switch writers, detach the first', async () => {
      ok(await script(a, 'create', { VOL_SIZE: '64' }));
      const uriA = kvmUri(ok(await script(a, 'attach'))) as string;
      ok(await script(a, 'open', { VOL_OPEN_EXCLUSIVE: 'True' }));
      expect((await qemuIo(a, uriA, 'write -P 0x5a 0 4M')).code).toBe(0);
      expect(await lockOwner(a)).toMatch(/^gnt-a_/);

      // Ganeti: close the target's disks, open both shared, then attach on the target.
      ok(await script(b, 'close'));
      ok(await script(a, 'open', { VOL_OPEN_EXCLUSIVE: 'False' }));
      ok(await script(b, 'open', { VOL_OPEN_EXCLUSIVE: 'False' }));
      const attachedB = ok(await script(b, 'attach'));
      const uriB = kvmUri(attachedB) as string;
      expect(uriB).toBe(`nbd+unix:///${vol}?socket=${b.runDir}/${vol}.sock`);
      // B serves A's data before the switch, while A still holds the lock.
      const readB = await qemuIo(b, uriB, 'read -P 0x5a 0 4M');
      expect(readB.code, readB.stdout).toBe(0);
      expect(await lockOwner(b)).toMatch(/^gnt-a_/);

      // The instance now runs on B: its first write asks A, whose endpoint hands the lock over.
      const writeB = await qemuIo(b, uriB, 'write -P 0xc3 4M 4M');
      expect(writeB.code, writeB.stdout).toBe(0);
      expect(await lockOwner(b)).toMatch(/^gnt-b_/);

      // Ganeti: close the source, open the target exclusive; then the source's disk is detached.
      ok(await script(a, 'close'));
      ok(await script(b, 'open', { VOL_OPEN_EXCLUSIVE: 'True' }));
      expect(ok(await script(a, 'detach'))).toBe('');
      expect((await a.vlmc('showmapped', '--json')).json).toEqual([]);
      // B's attach is unchanged (idempotent) and has every byte.
      expect(ok(await script(b, 'attach'))).toBe(attachedB);
      const all = await qemuIo(b, uriB, 'read -P 0x5a 0 4M', 'read -P 0xc3 4M 4M', 'read -P 0 8M 56M');
      expect(all.code, all.stdout).toBe(0);
      expect(await lockOwner(b)).toMatch(/^gnt-b_/);

      ok(await script(b, 'detach'));
      ok(await script(b, 'remove'));
      expect((await a.vlmc('info', vol)).code).toBe(1);
    });
  },
);
