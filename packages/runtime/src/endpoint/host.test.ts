import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config.js';
import { ENDPOINT_MODE_ENV, hostKey, sharedEndpoint, shareEndpointOf } from './host.js';
import { RunState } from './runstate.js';

describe('the shared endpoint process of a configuration', () => {
  it('is found by a key of the absolute configuration path: one per configuration', () => {
    const abs = join(process.cwd(), 'a', 'archipelago.conf');
    expect(hostKey('a/archipelago.conf')).toBe(hostKey(abs));
    expect(hostKey(abs)).toMatch(/^[0-9a-f]{12}$/);
    expect(hostKey(join(process.cwd(), 'b', 'archipelago.conf'))).not.toBe(hostKey(abs));
    const st = new RunState('/run/archipelago');
    expect(st.hostControlPath(hostKey(abs))).toBe(`/run/archipelago/endpoint-${hostKey(abs)}.ctl`);
    expect(st.hostLockPath('k')).toBe('/run/archipelago/endpoint-k.lock');
    expect(st.hostLogPath('k')).toBe('/run/archipelago/endpoint-k.log');
  });

  it('is the default; ARCHIPELAGO_ENDPOINT_MODE=per-volume starts a process per volume', () => {
    expect(sharedEndpoint({})).toBe(true);
    expect(sharedEndpoint({ [ENDPOINT_MODE_ENV]: 'shared' })).toBe(true);
    expect(sharedEndpoint({ [ENDPOINT_MODE_ENV]: 'per-volume' })).toBe(false);
    expect(() => sharedEndpoint({ [ENDPOINT_MODE_ENV]: 'pervolume' })).toThrow(
      /^ARCHIPELAGO_ENDPOINT_MODE is "pervolume": "shared" .* or "per-volume"$/,
    );
  });
  it('is not shared when each endpoint would hold its own RADOS client (embedded over rados_blocker)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'archip-share-'));
    try {
      const file = (name: string, blockerb: string) => {
        const path = join(dir, name);
        writeFileSync(
          path,
          `[blockerb]\n${blockerb}\n\n[blockerm]\ntype = file_blocker\narchip_dir = ${join(dir, 'm')}\n`,
        );
        return loadConfig(path);
      };
      const files = file('f.conf', `type = file_blocker\narchip_dir = ${join(dir, 'b')}`);
      const rados = file('r.conf', 'type = rados_blocker\npool = blocks\nceph_conf = /etc/ceph/ceph.conf');
      const env = { ARCHIPELAGO_WIRING: 'embedded' };
      expect(shareEndpointOf(files, env).shared).toBe(true);
      expect(shareEndpointOf(rados, env)).toMatchObject({
        shared: false,
        why: expect.stringMatching(/\[blockerb\] is a rados_blocker .* a lock break fences only its volume/),
      });
      // Through the daemons the endpoint holds no RADOS client: blockerb does.
      expect(shareEndpointOf(rados, { ARCHIPELAGO_WIRING: 'daemons' }).shared).toBe(true);
      // Unless it writes RADOS itself: its client is then in each volume's lock record.
      expect(
        shareEndpointOf(rados, { ARCHIPELAGO_WIRING: 'daemons', ARCHIPELAGO_DATA_PATH: 'direct' }),
      ).toMatchObject({ shared: false, why: expect.stringMatching(/one client per mapped volume/) });
      expect(shareEndpointOf(files, { ...env, [ENDPOINT_MODE_ENV]: 'per-volume' }).shared).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
