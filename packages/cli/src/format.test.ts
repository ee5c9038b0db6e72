import type { MappedStatus } from '@archipelago/runtime';
import { describe, expect, it } from 'vitest';
import { mappedTable } from './format.js';

const base: MappedStatus = {
  volume: 'vm1',
  pid: 4242,
  uri: 'nbd+unix:///vm1?socket=/run/archipelago/vm1.sock',
  socket: '/run/archipelago/vm1.sock',
  readonly: false,
  control: '/run/archipelago/vm1.ctl',
  config: '/etc/archipelago/archipelago.conf',
  started: '2026-01-01T00:00:00.000Z',
  alive: true,
};

describe('showmapped table', () => {
  it('shows the loop device and FUSE file of a --fuse map, the socket of a --vhost-user map', () => {
    const lines = mappedTable([
      { ...base, fuse: '/run/vm1.img', device: '/dev/loop3' },
      { ...base, volume: 'vm2', uri: 'nbd://127.0.0.1:10809/vm2', vhostUser: '/run/vm2.vhost', alive: false },
      { ...base, volume: 'vm3-snap', readonly: true },
    ]);
    const cells = lines.map((l) => l.split(/\s{2,}/));
    expect(cells[0]).toEqual(['VOLUME', 'URI', 'DEVICE', 'FUSE', 'VHOST-USER', 'PID', 'STATE', 'MODE']);
    expect(cells[1]).toEqual(['vm1', base.uri, '/dev/loop3', '/run/vm1.img', '-', '4242', 'mapped', 'rw']);
    expect(cells[2]).toEqual([
      'vm2',
      'nbd://127.0.0.1:10809/vm2',
      '-',
      '-',
      '/run/vm2.vhost',
      '4242',
      'stale',
      'rw',
    ]);
    expect(cells[3]).toEqual(['vm3-snap', base.uri, '-', '-', '-', '4242', 'mapped', 'ro']);
  });
});
