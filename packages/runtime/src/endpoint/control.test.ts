import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArchipelagoError, pidAlive } from '@archipelago/libxseg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { callControl, serveControl } from './control.js';
import { RunState } from './runstate.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'archip-ctl-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function raw(path: string, bytes: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(path);
    let out = '';
    s.on('connect', () => s.write(bytes));
    s.on('data', (d) => {
      out += d;
      if (out.endsWith('\n')) s.end();
    });
    s.on('close', () => resolve(out));
    s.on('error', () => resolve(out));
  });
}

describe('control channel', () => {
  it('answers requests, carries error codes back, and survives garbage', async () => {
    const path = join(dir, 'v.ctl');
    const server = await serveControl(path, async (r) => {
      if (r.op === 'ping') return { epoch: 5n };
      throw new ArchipelagoError('ELOCKED', 'held by h_1', { details: { owner: 'h_1' } });
    });
    try {
      expect(await callControl(path, { op: 'ping' })).toEqual({ epoch: '5' });
      await expect(callControl(path, { op: 'info' })).rejects.toMatchObject({
        code: 'ELOCKED',
        details: { owner: 'h_1' },
      });
      expect(await raw(path, 'not json\n')).toMatch(/"code":"EINVAL"/);
      expect(await raw(path, '{"no":"op"}\n')).toMatch(/"code":"EINVAL"/);
      await raw(path, 'x'.repeat(100_000)); // no newline, oversized: dropped
      expect(await callControl(path, { op: 'ping' })).toEqual({ epoch: '5' });
    } finally {
      server.close();
    }
  });

  it('reports an unreachable holder as EIO', async () => {
    await expect(callControl(join(dir, 'none.ctl'), { op: 'ping' }, 1000)).rejects.toMatchObject({
      code: 'EIO',
    });
  });
});

describe('run-state', () => {
  it('writes, finds by name, URI or device, and reports dead holders as stale', async () => {
    const st = new RunState(join(dir, 'run'));
    const base = { readonly: false, config: '/c', started: 'now' };
    await st.write({
      ...base,
      volume: 'a',
      pid: process.pid,
      uri: 'nbd://127.0.0.1:1/a',
      control: st.controlPath('a'),
    });
    await st.write({
      ...base,
      volume: 'b',
      pid: 2 ** 22 + 7,
      uri: 'nbd://127.0.0.1:2/b',
      device: '/dev/nbd3',
      control: '',
    });
    expect((await st.list()).map((e) => [e.volume, e.alive])).toEqual([
      ['a', true],
      ['b', false],
    ]);
    expect((await st.find('nbd://127.0.0.1:1/a'))?.volume).toBe('a');
    expect((await st.find('/dev/nbd3'))?.volume).toBe('b');
    expect(await st.find('zzz')).toBeNull();
    await st.remove('b');
    expect((await st.list()).length).toBe(1);
    expect(pidAlive(process.pid)).toBe(true);
  });
});
