/**
 * What the configuration tells `archipelago start|stop|status` (issue 16): `[PEERS] ORDER`
 * orders start and stop (observed on the real peer processes), SEGMENT_SIZE is checked against
 * the guide's rule before anything starts, and status shows the segment's heap use.
 * Runs the built peers (`@archipelago/peer/main`), as `archipelago start` does.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArchipelagoError, pidAlive } from '@archipelago/libxseg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfig, type LoadedConfig, loadConfig, serializeConfig } from './config.js';
import { pidfileOf, segmentName, segmentSpecOf } from './paths.js';
import { checkSegmentSize, restart, segmentNeed, start, status, stop } from './peers.js';

const ORDER = ['blockerm', 'vlmcd', 'blockerb', 'mapperd'];

/** A daemons configuration in `dir` (written by our own serializer); `xseg`/`peers`: extra keys. */
function conf(
  dir: string,
  segment: string,
  xseg: Record<string, unknown>,
  peers: Record<string, unknown>,
): string {
  const p = join(dir, 'archipelago.conf');
  const peer = (port: number, extra: Record<string, unknown>) => ({
    portno_start: port,
    portno_end: port,
    nr_ops: 16,
    ...extra,
  });
  writeFileSync(
    p,
    serializeConfig({
      // The peers stay root: the test's directories are not reachable by another account.
      ARCHIPELAGO: { USER: 'root', GROUP: 'root' },
      XSEG: {
        SEGMENT_PORTS: 128,
        SEGMENT_DYNPORTS: 64,
        VTOOL_START: 100,
        VTOOL_END: 110,
        segment_name: segment,
        ...xseg,
      },
      PEERS: { ROLES: 'blockerb blockerm mapperd vlmcd', ...peers },
      blockerb: peer(10, { type: 'file_blocker', archip_dir: 'blocks' }),
      blockerm: peer(12, { type: 'file_blocker', archip_dir: 'maps' }),
      mapperd: peer(11, { blockerb_port: 10, blockerm_port: 12 }),
      vlmcd: { ...peer(20, { blocker_port: 10, mapper_port: 11 }), portno_end: 30 },
    }),
  );
  return p;
}

/** A process's start time, in clock ticks since boot (/proc/<pid>/stat field 22). */
function startTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
}

let dir: string;
let loaded: LoadedConfig;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'archip-peers-config-'));
});

afterAll(async () => {
  if (loaded) await stop(loaded, undefined, { force: true }, () => {}).catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

describe('SEGMENT_SIZE (the guide\'s "Calculating SEGMENT_SIZE")', () => {
  it('start refuses a segment smaller than the peers need, with the number and the formula, and starts nothing', async () => {
    const l = loadConfig(conf(dir, `cfgseg${process.pid}`, { SEGMENT_SIZE: 1 }, {}), { env: {} });
    let err: unknown;
    try {
      await start(l, undefined, () => {});
      await stop(l, undefined, { force: true }, () => {}); // started: undo it, then fail below
    } catch (e) {
      err = e;
    }
    expect(ArchipelagoError.is(err, 'EINVAL_CONFIG')).toBe(true);
    const msg = (err as Error).message;
    expect(msg).toContain('XSEG.SEGMENT_SIZE is 1 MiB; the peers need at least 400 MiB');
    expect(msg).toContain(
      '256 + 16 × 4 MiB (blockerb) + 16 × 4 MiB (blockerm) + 16 × 512 KiB (mapperd) + 16 × 512 KiB (vlmcd) = 400 MiB',
    );
    await expect(restart(l, undefined, {}, () => {})).rejects.toMatchObject({ code: 'EINVAL_CONFIG' });
    for (const r of ORDER) expect(existsSync(pidfileOf(l, r))).toBe(false);
    expect(existsSync(`/dev/shm/${segmentName(l)}`)).toBe(false);
  });

  it('the shipped defaults pass (1280 of 2048 MiB)', () => {
    const l: LoadedConfig = {
      path: '/etc/archipelago/archipelago.conf',
      source: 'system',
      created: false,
      config: defaultConfig('/srv/archip'),
    };
    expect(segmentNeed(l).needMiB).toBe(1280);
    expect(checkSegmentSize(l).formula).toBe(
      '256 + 64 × 4 MiB (blockerb) + 64 × 4 MiB (blockerm) + 512 × 512 KiB (mapperd) + 512 × 512 KiB (vlmcd) = 1280 MiB',
    );
  });
});

describe('[PEERS] ORDER', () => {
  it('is refused unless it names each role of ROLES once', async () => {
    for (const [order, why] of [
      ['blockerb blockerm mapperd vlmcd poold', 'names poold, not in PEERS.ROLES'],
      ['blockerb blockerm mapperd', 'leaves out vlmcd'],
      ['blockerb blockerm mapperd vlmcd vlmcd', 'names vlmcd twice'],
    ] as const) {
      const p = conf(dir, 'x', { SEGMENT_SIZE: 400 }, { ORDER: order });
      expect(() => loadConfig(p, { env: {} })).toThrow(
        expect.objectContaining({
          code: 'EINVAL_CONFIG',
          message: expect.stringMatching(
            `^${p}: PEERS\\.ORDER \\(${order}\\) must name each role of PEERS\\.ROLES .*: it ${why}$`,
          ),
        }),
      );
    }
  });

  it('orders start, and stop in reverse; status shows the heap in use', async () => {
    const segment = `cfgord${process.pid}`;
    loaded = loadConfig(conf(dir, segment, { SEGMENT_SIZE: 400 }, { ORDER: ORDER.join(' ') }), {
      env: {},
    });
    const started = await start(loaded, undefined, () => {});
    expect(started.map((s) => s.role)).toEqual(ORDER);
    const pids = started.map((s) => s.pid as number);
    const ticks = pids.map(startTicks);
    for (let i = 1; i < ticks.length; i++) expect(ticks[i]).toBeGreaterThanOrEqual(ticks[i - 1]!);

    // Heap use: a request holding 3 MiB of data shows in status, and goes when released.
    const { Segment } = await import('@archipelago/libxseg/segment');
    const seg = Segment.join(segmentSpecOf(loaded));
    const port = seg.bindDynamicPort();
    const req = port.prepare(3 * 2 ** 20);
    const st = await status(loaded);
    expect(st.peers.map((p) => p.role)).toEqual(ORDER);
    expect(st.segment.heap?.size).toBeGreaterThanOrEqual(399 * 2 ** 20);
    expect(st.segment.heap?.used).toBeGreaterThanOrEqual(3 * 2 ** 20);
    expect(st.segment.heap?.requests.held).toBeGreaterThanOrEqual(1);
    req.release();
    port.close();
    seg.close();
    expect((await status(loaded)).segment.heap?.used).toBeLessThan(2 ** 20);

    // Stop: reverse ORDER; when each is reported stopped, those before it in ORDER still run.
    const seen: Array<{ line: string; alive: boolean[] }> = [];
    await stop(loaded, undefined, {}, (line) => seen.push({ line, alive: pids.map(pidAlive) }));
    const stops = seen.filter((s) => / stopped /.test(s.line));
    expect(stops.map((s) => s.line.split(':')[0])).toEqual([...ORDER].reverse());
    stops.forEach((s, k) => {
      const stoppedIndex = ORDER.length - 1 - k;
      expect(s.alive.slice(0, stoppedIndex)).toEqual(Array(stoppedIndex).fill(true));
      expect(s.alive.slice(stoppedIndex)).toEqual(Array(ORDER.length - stoppedIndex).fill(false));
    });
    expect(existsSync(`/dev/shm/${segment}`)).toBe(false);
  }, 30_000);
});
