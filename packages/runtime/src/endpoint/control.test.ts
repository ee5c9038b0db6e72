import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
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

/** Listens on `path`; `stale` (the file renamed away and back after close) leaves a socket nobody answers on. */
async function socketAt(path: string): Promise<Server> {
  const s = createServer((c) => c.destroy());
  await new Promise<void>((resolve) => s.listen(path, resolve));
  return s;
}

async function staleSocketAt(path: string): Promise<void> {
  const s = await socketAt(`${path}.tmp`);
  await rename(`${path}.tmp`, path); // close() unlinks the name it bound, not this one
  await new Promise<void>((resolve) => s.close(() => resolve()));
}

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

  it('replaces what a dead holder left at its path, never a live holder (EBUSY)', async () => {
    const path = join(dir, 'v.ctl');
    await staleSocketAt(path);
    const first = await serveControl(path, async () => ({ n: 1 }));
    try {
      expect(await callControl(path, { op: 'ping' })).toEqual({ n: 1 });
      await expect(serveControl(path, async () => ({ n: 2 }))).rejects.toMatchObject({
        code: 'EBUSY',
        details: { control: path },
      });
      expect(await callControl(path, { op: 'ping' })).toEqual({ n: 1 });
    } finally {
      first.close();
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

  it('records the holder start time: a pid now used by another process is stale', async () => {
    const st = new RunState(join(dir, 'run'));
    const base = { readonly: false, config: '/c', started: 'now', uri: 'u', control: '' };
    await st.write({ ...base, volume: 'a', pid: process.pid });
    const written = JSON.parse(await readFile(join(dir, 'run', 'a.json'), 'utf8')) as { start?: string };
    expect(written.start).toMatch(/^\d+$/);
    expect((await st.read('a'))?.alive).toBe(true);
    await st.write({ ...base, volume: 'b', pid: process.pid, start: '1' }); // another process, same pid
    expect((await st.read('b'))?.alive).toBe(false);
  });

  it("remove clears a dead endpoint's sockets (custom path included) and leaves live ones", async () => {
    const st = new RunState(join(dir, 'run'));
    await mkdir(st.dir, { recursive: true });
    const custom = join(dir, 'custom.sock');
    for (const p of [st.socketPath('v'), st.controlPath('v'), custom]) await staleSocketAt(p);
    await writeFile(join(st.dir, 'v.json'), '{}');
    await st.remove('v', custom);
    for (const p of [st.socketPath('v'), st.controlPath('v'), custom, join(st.dir, 'v.json')])
      expect(existsSync(p)).toBe(false);
    const live = await socketAt(custom);
    try {
      await st.remove('v', custom);
      expect(existsSync(custom)).toBe(true);
    } finally {
      live.close();
    }
  });

  it('remove leaves Node able to import a linked package afterwards (nodejs/node#51142)', () => {
    // Node 20's realpathSync trusts the stat array of the last sync/callback stat: after one of a
    // socket (fs.promises.rm does one) the next import() of a pnpm-linked package resolves
    // through the symlink and fails; `vlmc map` in daemons mode did, after a kill -9. Needs the
    // built dist (a plain node process, as vlmc runs).
    const pkg = join(dirname(fileURLToPath(import.meta.url)), '../..');
    if (!existsSync(join(pkg, 'dist/index.js'))) throw new Error('packages/runtime is not built: pnpm build');
    const script = `
      const { RunState } = await import('@archipelago/runtime');
      const net = await import('node:net');
      const { rename } = await import('node:fs/promises');
      const st = new RunState(process.argv[1]);
      for (const p of [st.socketPath('v'), st.controlPath('v')]) {
        const s = net.createServer();
        await new Promise((r) => s.listen(p + '.tmp', r));
        await rename(p + '.tmp', p);
        await new Promise((r) => s.close(r));
      }
      await st.remove('v');
      await import('@archipelago/peer');
      console.log('imported');`;
    mkdirSync(join(dir, 'run'));
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script, join(dir, 'run')], {
      cwd: pkg,
      encoding: 'utf8',
    });
    expect(out.trim()).toBe('imported');
  });
});
