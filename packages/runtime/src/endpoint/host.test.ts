import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ENDPOINT_MODE_ENV, hostKey, sharedEndpoint } from './host.js';
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
});
