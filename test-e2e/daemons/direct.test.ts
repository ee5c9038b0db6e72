/**
 * Issue 18, "daemons without the extra hop": through `archipelago start` and `vlmc map`, the
 * endpoint reads and writes the volume's data objects itself (the file store is reachable), so no
 * data I/O crosses the segment to blockerb: blockerb, logging every request it serves (log level
 * 3), serves no READ or WRITE for the NBD client's I/O, and what the client wrote reads back
 * through blockerb (a second mapping with `ARCHIPELAGO_DATA_PATH=segment`, whose I/O blockerb serves).
 * One daemon set for the file (< 20 s wall).
 */
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { dataRequests, ENV, makeConfig, qemuIo as runQemuIo, type TestConfig, VLMC } from './helpers.js';

let cfg: TestConfig | undefined;

afterAll(() => {
  cfg?.cleanup();
});

/** Runs qemu-io commands against a mapped volume's NBD URI; fails on any error or mismatch. */
function qemuIo(uri: string, ...cmds: string[]): void {
  const r = runQemuIo(uri, ...cmds);
  expect(r.ok, r.out).toBe(true);
}

function map(c: TestConfig, name: string, env: NodeJS.ProcessEnv = {}): string {
  const r = spawnSync(process.execPath, [VLMC, '-c', c.conf, 'map', name], {
    encoding: 'utf8',
    env: { ...ENV, ...env },
    timeout: 30_000,
  });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout.trim();
}

describe('the vlmc map endpoint through the daemons: no data across the segment', () => {
  it('NBD writes and reads of a mapped volume never reach blockerb; the bytes read back through blockerb', () => {
    cfg = makeConfig({ logLevel: 3 });
    const c = cfg;
    expect(c.tool('start').status).toBe(0);
    expect(c.vlmc('create', 'dv', '--size', '16M').status).toBe(0);

    const uri = map(c, 'dv');
    const before = dataRequests(c);
    qemuIo(
      uri,
      'write -P 0xa5 0 2M', // blocks copied up by mapperd (COPY/DELETE to blockerb), data written here
      'write -P 0x5a 3M 64k',
      'write -P 0x3c 4092k 8k', // across a block boundary
      'flush',
      'read -P 0xa5 0 2M',
      'read -P 0x5a 3M 64k',
      'read -P 0x3c 4092k 8k',
      'discard 8M 4M', // a whole block back to zero (blockerb deletes its object) ...
      'write -P 0x77 8M 4k', // ... and written again: the same object name
      'read -P 0x77 8M 4k',
      'read -P 0 8196k 4k',
      'flush',
    );
    expect(dataRequests(c) - before, 'READ/WRITE requests blockerb served for the NBD I/O').toBe(0);
    expect(c.vlmc('unmap', 'dv').status).toBe(0);

    // The segment path, forced: the same kind of I/O is served by blockerb, which reads what the
    // direct endpoint wrote.
    const uri2 = map(c, 'dv', { ARCHIPELAGO_DATA_PATH: 'segment' });
    const before2 = dataRequests(c);
    qemuIo(
      uri2,
      'read -P 0xa5 0 2M',
      'read -P 0 2M 1M',
      'read -P 0x5a 3M 64k',
      'read -P 0x3c 4092k 8k',
      'read -P 0x77 8M 4k',
      'read -P 0 8196k 4k',
      'write -P 0x11 1M 64k',
      'read -P 0x11 1M 64k',
      'flush',
    );
    expect(dataRequests(c) - before2).toBeGreaterThanOrEqual(7);
  }, 60_000);
});
