import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config.js';
import { ENDPOINT_MODE_ENV, hostKey, ownRadosClientsOf, sharedEndpoint, shareEndpointOf } from './host.js';
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
  it('is shared over RADOS too, with a RADOS client per volume where an endpoint holds one', () => {
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
      writeFileSync(join(dir, 'ceph.conf'), '[global]\n');
      const rados = file(
        'r.conf',
        `type = rados_blocker\npool = blocks\nceph_conf = ${join(dir, 'ceph.conf')}`,
      );
      const env = { ARCHIPELAGO_WIRING: 'embedded' };
      expect(shareEndpointOf(files, env)).toEqual({ shared: true, why: 'one endpoint process per host' });
      expect(ownRadosClientsOf(files, env)).toBeNull();
      // Embedded over RADOS: one process, a runtime (and a librados client) per volume.
      expect(shareEndpointOf(rados, env)).toMatchObject({
        shared: true,
        why: expect.stringMatching(/\[blockerb\] is a rados_blocker .* a lock break fences only its volume/),
      });
      expect(ownRadosClientsOf(rados, env)).toMatch(/RADOS client of its own/);
      // Through the daemons on the segment path the endpoint holds no RADOS client: blockerb does.
      const daemons = { ARCHIPELAGO_WIRING: 'daemons' };
      expect(shareEndpointOf(rados, daemons).shared).toBe(true);
      expect(ownRadosClientsOf(rados, { ...daemons, ARCHIPELAGO_DATA_PATH: 'segment' })).toBeNull();
      // The direct path over RADOS is taken only when asked for.
      expect(ownRadosClientsOf(rados, daemons)).toBeNull();
      // Unless it writes RADOS itself: each volume's data client is its own.
      const direct = { ...daemons, ARCHIPELAGO_DATA_PATH: 'direct' };
      expect(shareEndpointOf(rados, direct)).toMatchObject({
        shared: true,
        why: expect.stringMatching(/each mapped volume's data client is its own/),
      });
      expect(shareEndpointOf(rados, { ...direct, [ENDPOINT_MODE_ENV]: 'per-volume' }).shared).toBe(false);
      expect(shareEndpointOf(files, { ...env, [ENDPOINT_MODE_ENV]: 'per-volume' }).shared).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
