/**
 * The daemons, multi-process on a real segment: the built `archipelago` tool starts blocker peers
 * from a temporary configuration; tests drive them through SegmentBlocker from this process.
 *
 * test-e2e's package.json depends on @archipelago/cli only, so the peer and segment packages are
 * imported by path (their sources, as vitest resolves every workspace package).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig, peerOptions } from '@archipelago/runtime';
import { afterEach, describe, expect, it } from 'vitest';
import { Segment } from '../../packages/libxseg/src/segment/index.js';
import { PEER_OPTIONS_ENV, SegmentBlocker } from '../../packages/peer/src/index.js';
import { BLOCKERB_PORT, ENV, makeConfig, ROOT, sleep, type TestConfig, until, VLMC } from './helpers.js';

const PEER_MAIN = join(ROOT, 'packages/peer/dist/main.js');
let cfg: TestConfig | undefined;

afterEach(() => {
  cfg?.cleanup();
  cfg = undefined;
});

interface StatusJson {
  segment: { name: string; exists: boolean };
  peers: { role: string; state: string; pid?: number }[];
  mapped: { volume: string; pid: number }[];
}

const stateOf = (s: StatusJson, role: string) => s.peers.find((p) => p.role === role)?.state;

describe('archipelago start / status / stop', () => {
  it('starts the four roles in ROLES order, refuses a second start, stops in reverse', () => {
    cfg = makeConfig();
    const started = cfg.tool('start');
    expect(started.status, started.stderr).toBe(0);
    expect(started.stdout).toMatch(
      /blockerb: started \(pid \d+\)\nblockerm: started \(pid \d+\)\nmapperd: started \(pid \d+\)\nvlmcd: started/,
    );

    const st = cfg.tool('status', '--json').json as StatusJson;
    expect(st.segment).toMatchObject({ name: cfg.segment, exists: true });
    expect(st.peers.map((p) => [p.role, p.state])).toEqual([
      ['blockerb', 'running'],
      ['blockerm', 'running'],
      ['mapperd', 'running'],
      ['vlmcd', 'running'],
    ]);
    expect(st.mapped).toEqual([]);

    const again = cfg.tool('start', 'blockerm');
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/EBUSY: blockerm is already running/);

    const stopped = cfg.tool('stop', '--json');
    expect(stopped.status, stopped.stderr).toBe(0);
    const sj = stopped.json as { peers: { role: string; result: string }[]; segmentDestroyed: boolean };
    expect(sj.peers.map((p) => p.role)).toEqual(['vlmcd', 'mapperd', 'blockerm', 'blockerb']);
    expect(sj.peers.filter((p) => p.result === 'stopped').length).toBe(4);
    expect(sj.segmentDestroyed).toBe(true);
    const after = cfg.tool('status', '--json').json as StatusJson;
    expect(stateOf(after, 'blockerb')).toBe('not running');
    expect(after.segment.exists).toBe(false);
    expect(cfg.log('blockerb')).toMatch(/blockerb stopped/);
  });

  it('refuses to stop while a volume is mapped, unless -f', () => {
    cfg = makeConfig();
    expect(cfg.tool('start', 'blockerb').status).toBe(0);
    // a dead mapping does not count; a live one does
    writeFileSync(join(cfg.runDir, 'dead.json'), JSON.stringify({ volume: 'dead', pid: 2 ** 22 + 7 }));
    writeFileSync(join(cfg.runDir, 'vol1.json'), JSON.stringify({ volume: 'vol1', pid: process.pid }));
    const st = cfg.tool('status', '--json').json as StatusJson;
    expect(st.mapped.map((v) => v.volume)).toEqual(['vol1']);
    const refused = cfg.tool('stop');
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/EBUSY: volumes are mapped: vol1/);
    expect(stateOf(cfg.tool('status', '--json').json as StatusJson, 'blockerb')).toBe('running');
    const forced = cfg.tool('stop', '-f');
    expect(forced.status, forced.stderr).toBe(0);
    expect(stateOf(cfg.tool('status', '--json').json as StatusJson, 'blockerb')).toBe('not running');
  });

  it('reports an unknown role and a peer that cannot start, and stops what it started', () => {
    cfg = makeConfig();
    const unknown = cfg.tool('start', 'nosuch');
    expect(unknown.status).toBe(1);
    expect(unknown.stderr).toMatch(/unknown peer "nosuch"/);
    // blockerm cannot bind: another process (this one) owns its port
    const seg = Segment.open(cfg.spec);
    const hog = seg.bindPort(12);
    try {
      const r = cfg.tool('start');
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/blockerm failed to start.*EBUSY/);
      expect(stateOf(cfg.tool('status', '--json').json as StatusJson, 'blockerb')).toBe('not running');
    } finally {
      hog.close();
      seg.close();
    }
  });
});

describe('pidfiles', () => {
  it('a live pidfile refuses a second peer; a dead peer leaves a stale pidfile that start replaces', async () => {
    cfg = makeConfig();
    expect(cfg.tool('start', 'blockerb').status).toBe(0);
    const pid = cfg.pidOf('blockerb') as number;
    const opts = peerOptions(loadConfig(cfg.conf), 'blockerb');
    const second = spawnSync(process.execPath, [PEER_MAIN], {
      encoding: 'utf8',
      env: { ...process.env, [PEER_OPTIONS_ENV]: JSON.stringify(opts) },
      timeout: 10_000,
    });
    expect(second.status).toBe(1);
    expect(second.stderr).toMatch(new RegExp(`EBUSY: blockerb is already running \\(pid ${pid}`));
    expect(cfg.pidOf('blockerb')).toBe(pid);

    process.kill(pid, 'SIGKILL');
    await until(
      () =>
        (cfg?.tool('status', '--json').json as StatusJson | undefined)?.peers[0]?.state === 'stale pidfile',
      5000,
      'stale pidfile',
    );
    const restarted = cfg.tool('start', 'blockerb');
    expect(restarted.status, restarted.stderr).toBe(0);
    const pid2 = cfg.pidOf('blockerb');
    expect(pid2).not.toBe(pid);
    expect(stateOf(cfg.tool('status', '--json').json as StatusJson, 'blockerb')).toBe('running');
    expect(cfg.log('blockerb')).toMatch(/replac\w+ a stale pidfile/);
  });
});

describe('log level signals', () => {
  it('SIGUSR2 raises and SIGUSR1 lowers the level, as the log shows', async () => {
    cfg = makeConfig({ logLevel: 2 });
    expect(cfg.tool('start', 'blockerb').status).toBe(0);
    const pid = cfg.pidOf('blockerb') as number;
    const seg = Segment.join(cfg.spec);
    const b = new SegmentBlocker({ segment: seg, port: BLOCKERB_PORT });
    const served = () => (cfg?.log('blockerb').match(/"msg":"served"/g) ?? []).length;
    try {
      await b.write('lvl', 0, Buffer.from('x'));
      expect(served()).toBe(0); // info: requests are not logged
      process.kill(pid, 'SIGUSR2');
      await until(() => /"logLevel":3/.test(cfg?.log('blockerb') ?? ''), 5000, 'level 3');
      await b.write('lvl', 0, Buffer.from('y'));
      await b.read('lvl', 0, 1);
      // debug: each request is. The peer logs a request after it replies, so wait for the lines.
      await until(() => served() === 2, 5000, 'two "served" lines');
      process.kill(pid, 'SIGUSR1');
      await until(() => /"logLevel":2/.test(cfg?.log('blockerb') ?? ''), 5000, 'level 2');
      process.kill(pid, 'SIGUSR1');
      await until(() => /"logLevel":1/.test(cfg?.log('blockerb') ?? ''), 5000, 'level 1');
      await b.write('lvl', 0, Buffer.from('z'));
      // A line logged after that write shows its "served" line would already be there.
      process.kill(pid, 'SIGUSR2');
      await until(
        () => (cfg?.log('blockerb').match(/"logLevel":2/g) ?? []).length >= 2,
        5000,
        'level 2 again',
      );
      expect(served()).toBe(2);
    } finally {
      await b.close();
      seg.close();
    }
  });
});

describe('crash and recovery', () => {
  it('a clean stop drains accepted requests: no request fails across `stop blockerb` / `start blockerb`', async () => {
    cfg = makeConfig();
    expect(cfg.tool('start', 'blockerb').status).toBe(0);
    const seg = Segment.join(cfg.spec);
    const b = new SegmentBlocker({ segment: seg, port: BLOCKERB_PORT });
    let ok = 0;
    const errors: unknown[] = [];
    let stop = false;
    const writer = async (w: number) => {
      for (let n = 0; !stop; n++) {
        try {
          await b.write(`d${w}-${n}`, 0, Buffer.alloc(32 * 1024, n & 0xff));
          ok++;
        } catch (e) {
          errors.push(e);
        }
      }
    };
    try {
      const writers = Array.from({ length: 8 }, (_, i) => writer(i));
      await until(() => ok > 30, 10_000, 'writes');
      const stopped = cfg.tool('stop', 'blockerb');
      expect(stopped.status, stopped.stderr).toBe(0);
      expect(cfg.log('blockerb')).toMatch(/stopping: draining accepted requests/);
      const before = ok;
      expect(cfg.tool('start', 'blockerb').status).toBe(0);
      await until(() => ok > before + 30, 10_000, 'writes after the restart');
      stop = true;
      await Promise.all(writers);
      expect(errors).toEqual([]);
    } finally {
      stop = true;
      await b.close();
      seg.close();
    }
  });

  it('a blocker peer killed with kill -9 during I/O comes back with `archipelago start`; every acknowledged write reads back', async () => {
    cfg = makeConfig();
    expect(cfg.tool('start').status).toBe(0);
    const seg = Segment.join(cfg.spec);
    const b = new SegmentBlocker({ segment: seg, port: BLOCKERB_PORT });
    const acked = new Map<string, number>();
    let failed = 0;
    let stop = false;
    const SIZE = 64 * 1024;
    const data = (seed: number) => {
      const buf = Buffer.alloc(SIZE, seed & 0xff);
      buf.writeUInt32LE(seed, 0);
      return buf;
    };
    const writer = async (w: number) => {
      for (let n = 0; !stop; n++) {
        const name = `w${w}-${n}`;
        const seed = w * 100_000 + n;
        try {
          await b.write(name, 0, data(seed));
          acked.set(name, seed);
        } catch (e) {
          failed++;
          expect((e as { code?: string }).code).toBe('EIO');
        }
      }
    };
    try {
      const writers = Array.from({ length: 8 }, (_, i) => writer(i));
      await until(() => acked.size > 50, 10_000, 'writes before the crash');
      const pid = cfg.pidOf('blockerb') as number;
      process.kill(pid, 'SIGKILL');
      await sleep(200);
      const ackedAtCrash = acked.size;
      const st = cfg.tool('status', '--json').json as StatusJson;
      expect(stateOf(st, 'blockerb')).toBe('stale pidfile');
      // The documented recovery is `archipelago start <peer>`: it replaces the stale pidfile, and
      // binding the dead peer's port fails back what it had accepted (xseg recoverport).
      const r = cfg.tool('start', 'blockerb');
      expect(r.status, r.stderr).toBe(0);
      await until(() => acked.size > ackedAtCrash + 50, 10_000, 'writes after the restart');
      stop = true;
      await Promise.all(writers);
      expect(cfg.log('blockerb')).toMatch(/recovered the port from a dead previous owner|blockerb started/);

      const check = new SegmentBlocker({ segment: seg, port: BLOCKERB_PORT });
      try {
        for (const [name, seed] of acked) {
          expect((await check.read(name, 0, SIZE)).equals(data(seed)), name).toBe(true);
        }
      } finally {
        await check.close();
      }
      const report = seg.report();
      const port = report.ports.find((p) => p.port === BLOCKERB_PORT);
      expect(port?.requestQueue).toBe(0);
      expect(report.locks.filter((l) => l.ownerPid !== 0 && !l.ownerAlive)).toEqual([]);
      expect(report.requests.accepted).toBe(0);
      console.log(
        `crash test: ${acked.size} writes acknowledged and verified, ${failed} failed by the crash`,
      );
    } finally {
      stop = true;
      await b.close();
      seg.close();
    }
  });
});

describe('vlmc over the daemons', () => {
  it('vlmc goes through mapperd and vlmcd while they run; a crashed vlmcd is reported, not bypassed', () => {
    cfg = makeConfig();
    const c = cfg;
    expect(c.tool('start').status).toBe(0);
    expect(c.vlmc('create', 'dv', '--size', '8M').status).toBe(0);
    expect(c.vlmc('open', 'dv').status).toBe(0);
    expect(c.log('mapperd')).toMatch(/"volume":"dv"/);
    expect(c.vlmc('close', 'dv').status).toBe(0);
    process.kill(c.pidOf('vlmcd') as number, 'SIGKILL');
    const down = c.vlmc('info', 'dv');
    expect(down.status).toBe(1);
    expect(down.stderr).toMatch(/vlmcd is not running \(stale pidfile/);
    expect(c.tool('restart', 'vlmcd').status).toBe(0);
    expect(c.vlmc('info', 'dv').status).toBe(0);
    // With the daemons stopped, vlmc is embedded again.
    expect(c.tool('stop').status).toBe(0);
    expect(c.vlmc('remove', 'dv').status).toBe(0);
  });
});

/** `vlmc info NAME --json`'s lock owner. */
const ownerOf = (c: TestConfig, name: string) =>
  (c.vlmc('info', name, '--json').json as { lockOwner: string | null }).lockOwner;

/** Writes `byte` over the first MiB of a mapped volume with qemu-io, through `vlmc map`. */
function writeThroughMap(c: TestConfig, name: string, byte: number): void {
  const map = c.vlmc('map', name);
  expect(map.status, map.stderr).toBe(0);
  const io = spawnSync('qemu-io', ['-f', 'raw', '-c', `write -P ${byte} 0 1M`, map.stdout.trim()], {
    encoding: 'utf8',
    env: ENV,
  });
  expect(io.stdout, io.stderr).toMatch(/wrote 1048576\/1048576 bytes/);
  expect(c.vlmc('unmap', name).status).toBe(0);
}

/** The first MiB of a volume, exported through vlmc. */
function firstMiB(c: TestConfig, name: string): Buffer {
  const out = join(c.dir, `${name}.raw`);
  const r = c.vlmc('export', name, out);
  expect(r.status, r.stderr).toBe(0);
  return readFileSync(out).subarray(0, 1 << 20);
}

describe('one identity per host, whatever the wiring', () => {
  it('a volume opened before `archipelago start` is used, mapped and closed through the daemons', () => {
    cfg = makeConfig();
    const c = cfg;
    expect(c.vlmc('create', 'before', '--size', '8M').status).toBe(0);
    const open = c.vlmc('open', 'before', '--json');
    expect(open.status, open.stderr).toBe(0);
    const host = ownerOf(c, 'before');
    expect(host).toMatch(/_embedded$/);
    expect(c.tool('start').status).toBe(0);
    // The daemons take the lock as the same identity: the volume is this host's.
    expect(ownerOf(c, 'before')).toBe(host);
    const snap = c.vlmc('snapshot', 'before', 'before-s1');
    expect(snap.status, snap.stderr).toBe(0);
    expect(ownerOf(c, 'before')).toBe(host);
    writeThroughMap(c, 'before', 0x5a);
    // The snapshot above adopted the host's hold and gave it back (handOver): the unmap leaves it.
    expect(ownerOf(c, 'before')).toBe(host);
    expect(firstMiB(c, 'before').every((b) => b === 0x5a)).toBe(true);
    expect(firstMiB(c, 'before-s1').every((b) => b === 0)).toBe(true);
    const close = c.vlmc('close', 'before');
    expect(close.status, close.stderr).toBe(0);
    expect(ownerOf(c, 'before')).toBeNull();
    expect(c.tool('stop').status).toBe(0);
  });

  it('a volume opened through the daemons is used, mapped and closed after `archipelago stop`', () => {
    cfg = makeConfig();
    const c = cfg;
    expect(c.tool('start').status).toBe(0);
    expect(c.vlmc('create', 'after', '--size', '8M').status).toBe(0);
    const open = c.vlmc('open', 'after');
    expect(open.status, open.stderr).toBe(0);
    const host = ownerOf(c, 'after');
    expect(host).toMatch(/_embedded$/);
    // Mapped and unmapped through the daemons: the host's hold stays (mapperd keeps it open).
    writeThroughMap(c, 'after', 0); // zeros: the snapshot below must read as zeros
    expect(ownerOf(c, 'after')).toBe(host);
    expect(c.tool('stop').status).toBe(0);
    // The open outlives the daemons: the lock is still this host's, and the embedded vlmc uses it.
    expect(ownerOf(c, 'after')).toBe(host);
    const snap = c.vlmc('snapshot', 'after', 'after-s1');
    expect(snap.status, snap.stderr).toBe(0);
    expect(ownerOf(c, 'after')).toBe(host);
    writeThroughMap(c, 'after', 0xa5);
    expect(firstMiB(c, 'after').every((b) => b === 0xa5)).toBe(true);
    expect(firstMiB(c, 'after-s1').every((b) => b === 0)).toBe(true);
    expect(c.vlmc('open', 'after').status).toBe(0);
    expect(ownerOf(c, 'after')).toBe(host);
    const close = c.vlmc('close', 'after');
    expect(close.status, close.stderr).toBe(0);
    expect(ownerOf(c, 'after')).toBeNull();
  });
});
