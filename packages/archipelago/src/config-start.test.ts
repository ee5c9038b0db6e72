/**
 * `archipelago start|status|stop` as an operator runs them (the built tool): keys that have no
 * effect here are named once on stderr, --json stays clean on stdout, a SEGMENT_SIZE below the
 * guide's rule is refused with the number needed, and status shows the heap.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serializeConfig } from '@archipelago/runtime';
import { afterAll, describe, expect, it } from 'vitest';

const BIN = fileURLToPath(new URL('../bin/archipelago.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'archip-cli-conf-'));
const segment = `cliconf${process.pid}`;

/** Four peers on small ports, nr_ops 16 (they need 400 MiB), two keys that have no effect here. */
function conf(size: number): string {
  const p = join(dir, 'archipelago.conf');
  const peer = (port: number, more: Record<string, unknown>) => ({
    portno_start: port,
    portno_end: port,
    nr_ops: 16,
    ...more,
  });
  const sections = {
    ARCHIPELAGO: { BLKTAP_ENABLED: true, USER: 'root', GROUP: 'root' },
    XSEG: {
      SEGMENT_PORTS: 128,
      SEGMENT_DYNPORTS: 64,
      SEGMENT_SIZE: size,
      VTOOL_START: 100,
      VTOOL_END: 110,
      segment_name: segment,
    },
    blockerb: peer(10, { type: 'file_blocker', archip_dir: 'blocks', threshold: 1000 }),
    blockerm: peer(12, { type: 'file_blocker', archip_dir: 'maps' }),
    mapperd: peer(11, { blockerb_port: 10, blockerm_port: 12 }),
    vlmcd: { ...peer(20, { blocker_port: 10, mapper_port: 11 }), portno_end: 30 },
  };
  writeFileSync(p, serializeConfig(sections));
  return p;
}

function archipelago(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const count = (text: string, what: string) => text.split(what).length - 1;

afterAll(() => {
  archipelago('-c', join(dir, 'archipelago.conf'), 'stop', '-f');
  rmSync(dir, { recursive: true, force: true });
});

describe('archipelago start with the configuration file', () => {
  it('refuses SEGMENT_SIZE = 1 with the MiB the peers need, then starts with enough, naming no-op keys once on stderr; status shows the heap', () => {
    const small = archipelago('-c', conf(1), 'start');
    expect(small.status).not.toBe(0);
    expect(small.stderr).toContain('EINVAL_CONFIG');
    expect(small.stderr).toContain('the peers need at least 400 MiB');

    const p = conf(400);
    const r = archipelago('-c', p, 'start', '--json');
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { peers: { role: string; result: string }[] };
    expect(out.peers.map((x) => x.result)).toEqual(['started', 'started', 'started', 'started']);
    expect(
      count(r.stderr, 'notice: [ARCHIPELAGO] BLKTAP_ENABLED: no effect here: there is no Xen blktap'),
    ).toBe(1);
    expect(count(r.stderr, 'notice: [blockerb] threshold: no effect here')).toBe(1);
    expect(count(r.stderr, 'notice:')).toBe(2);

    const st = archipelago('-c', p, 'status');
    expect(st.status, st.stderr).toBe(0);
    expect(st.stdout).toMatch(new RegExp(`segment ${segment}: exists, heap \\d+\\.\\d / 400\\.0 MiB used`));
    const js = JSON.parse(archipelago('-c', p, 'status', '--json').stdout) as {
      segment: { heap: { used: number; size: number } };
    };
    expect(js.segment.heap.size).toBeGreaterThanOrEqual(399 * 2 ** 20);
    expect(js.segment.heap.used).toBeGreaterThanOrEqual(0);

    const stop = archipelago('-c', p, 'stop');
    expect(stop.status, stop.stderr).toBe(0);
    expect(count(stop.stderr, 'notice:')).toBe(0);
  }, 60_000);
});
