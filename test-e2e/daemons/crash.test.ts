/**
 * The crash test of the daemons: an NBD writer that records what was acknowledged runs against a
 * volume mapped through the daemons, with the endpoint composing itself (its default: mapperd for
 * maps and copy-ups, its own file blocker for data: the direct data path) and through vlmcd (ARCHIPELAGO_COMPOSE=vlmcd: vlmcd → mapperd →
 * blockerm/blockerb), while each role in turn is killed
 * with kill -9 and brought back the documented way (`archipelago start <peer>`, which replaces
 * the stale pidfile and, binding the dead peer's ports, fails back what it had accepted). The
 * clients (endpoint → vlmcd, vlmcd → mapperd, mapperd/vlmcd → blockers) send those requests again
 * once the peer is back, so the NBD client sees no error. Afterwards every acknowledged write
 * reads back, no volume lock is left, and the segment report is clean.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Segment } from '../../packages/libxseg/src/segment/index.js';
import { requireTool } from '../lib/vlmc.js';
import { ENV, makeConfig, sleep, type TestConfig, until, XSEG } from './helpers.js';

let cfg: TestConfig | undefined;
let writer: ChildProcess | undefined;

afterEach(() => {
  writer?.kill('SIGKILL');
  writer = undefined;
  cfg?.cleanup();
  cfg = undefined;
});

const SLOTS = 64;
const SLOT = 64 * 1024;

function pattern(slot: number, seq: number): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32LE(slot, 0);
  head.writeUInt32LE(seq, 4);
  const b = Buffer.alloc(SLOT);
  for (let i = 0; i < SLOT; i += 8) head.copy(b, i);
  return b;
}

function lockFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else if (n.endsWith('_lock')) out.push(n);
    }
  };
  walk(dir);
  return out;
}

describe.each(['local', 'vlmcd'] as const)(
  'daemons (endpoint compose=%s): kill -9 each role during NBD writes',
  (compose) => {
    it('every acknowledged write reads back, no lock is stuck, the segment report is clean', async () => {
      requireTool('nbdsh', 'nbdsh');
      cfg = makeConfig({ env: { ARCHIPELAGO_COMPOSE: compose } });
      const c = cfg;
      const started = c.tool('start');
      expect(started.status, started.stderr).toBe(0);
      expect(c.vlmc('create', 'crashvol', '--size', '16M').status).toBe(0);
      const mapped = c.vlmc('map', 'crashvol', '--json');
      expect(mapped.status, mapped.stderr).toBe(0);
      const sock = join(c.runDir, 'crashvol.sock');

      const last = new Map<number, number>(); // slot -> last acknowledged seq
      const unsure = new Set<number>(); // slots with a failed write after their last ack
      const errors: string[] = [];
      let acks = 0;
      let buf = '';
      writer = spawn(
        '/usr/bin/python3',
        [join(import.meta.dirname, 'nbd-writer.py'), sock, 'crashvol', String(SLOTS), String(SLOT)],
        {
          env: ENV,
          stdio: ['pipe', 'pipe', 'inherit'],
        },
      );
      let done = false;
      writer.stdout?.on('data', (d: Buffer) => {
        buf += d.toString();
        let nl = buf.indexOf('\n');
        while (nl >= 0) {
          const [kind, a, b, ...rest] = buf.slice(0, nl).split(' ');
          buf = buf.slice(nl + 1);
          nl = buf.indexOf('\n');
          if (kind === 'ack') {
            last.set(Number(a), Number(b));
            unsure.delete(Number(a));
            acks++;
          } else if (kind === 'err') {
            unsure.add(Number(a));
            errors.push(`${a} ${b} ${rest.join(' ')}`);
          } else if (kind === 'done') done = true;
        }
      });

      await until(() => acks > 100, 20_000, 'writes before the first crash');
      const log: string[] = [];
      if (compose === 'local') {
        // The endpoint composes itself: its writes do not wait for vlmcd at all.
        const vlmcd = c.pidOf('vlmcd') as number;
        const before = acks;
        process.kill(vlmcd, 'SIGSTOP');
        try {
          await until(() => acks > before + 20, 20_000, 'writes while vlmcd is stopped');
        } finally {
          process.kill(vlmcd, 'SIGCONT');
        }
      }
      for (const role of ['blockerb', 'blockerm', 'mapperd', 'vlmcd']) {
        const pid = c.pidOf(role) as number;
        const before = acks;
        process.kill(pid, 'SIGKILL');
        await sleep(300);
        const during = acks - before;
        const r = c.tool('start', role);
        expect(r.status, `${role}: ${r.stderr}`).toBe(0);
        await until(() => acks > before + 100, 30_000, `writes after restarting ${role}`);
        log.push(`${role}: killed (pid ${pid}), ${during} acks while it was down, restarted`);
      }
      writer.stdin?.end();
      await until(() => done, 30_000, 'the writer to finish');
      console.log(`crash test: ${acks} writes acknowledged, ${errors.length} failed\n  ${log.join('\n  ')}`);
      expect(errors).toEqual([]);

      // Read back every slot through NBD (a fresh connection) and compare with its last ack.
      const dump = join(c.dir, 'dump.bin');
      const copy = spawn(
        '/usr/bin/nbdcopy',
        ['--threads', '4', `nbd+unix:///crashvol?socket=${sock}`, dump],
        {
          env: ENV,
          stdio: 'inherit',
        },
      );
      await new Promise<void>((res, rej) =>
        copy.on('exit', (code) => (code === 0 ? res() : rej(new Error(`nbdcopy ${code}`)))),
      );
      const { readFileSync } = await import('node:fs');
      const data = readFileSync(dump);
      let checked = 0;
      for (const [slot, seq] of last) {
        if (unsure.has(slot)) continue;
        const got = data.subarray(slot * SLOT, (slot + 1) * SLOT);
        expect(got.equals(pattern(slot, seq)), `slot ${slot} seq ${seq}`).toBe(true);
        checked++;
      }
      expect(checked).toBeGreaterThan(SLOTS / 2);

      expect(c.vlmc('unmap', 'crashvol').status).toBe(0);
      expect(lockFiles(join(c.dir, 'maps'))).toEqual([]);

      const report = c.tool('status', '--json').json as { peers: { role: string; state: string }[] };
      expect(report.peers.map((p) => p.state)).toEqual(['running', 'running', 'running', 'running']);
      const seg = Segment.join(c.spec);
      try {
        const rep = seg.report();
        expect(rep.requests.accepted).toBe(0);
        expect(rep.requests.corrupt).toBe(0);
        expect(rep.locks.filter((l) => l.ownerPid !== 0)).toEqual([]);
        for (const p of rep.ports) {
          expect(p.requestQueue, `port ${p.port}`).toBe(0);
          expect(p.replyQueue, `port ${p.port}`).toBe(0);
          if (p.bound && p.port < rep.dynports) expect(p.ownerAlive, `port ${p.port}`).toBe(true);
        }
      } finally {
        seg.close();
      }
      const xs = spawn(process.execPath, [XSEG, c.spec, 'reportall'], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let text = '';
      xs.stdout?.on('data', (d: Buffer) => {
        text += d.toString();
      });
      await new Promise((r) => xs.on('exit', r));
      expect(text).toMatch(/0 accepted/);
      expect(text).not.toMatch(/\(dead\)/);
    }, 240_000);
  },
);
