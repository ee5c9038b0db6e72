/**
 * Listening where a server died: a unix socket left by a process killed with kill -9 is replaced,
 * one a live server answers on is not, and the failures are ArchipelagoErrors a CLI can print.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RawClient } from './__fixtures__/raw-client.js';
import { MemoryExport } from './exports.js';
import { NbdServer } from './server.js';
import { removeStaleSocket, unixSocketState } from './unix-socket.js';

let dir: string;
const closers: Array<() => Promise<void> | void> = [];
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nbd-sock-'));
});
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
  await rm(dir, { recursive: true, force: true });
});

/** A socket whose server was killed with SIGKILL: the file stays, nobody listens. */
async function staleSocket(path: string): Promise<void> {
  const child = spawn(
    process.execPath,
    [
      '-e',
      `require('node:net').createServer().listen(${JSON.stringify(path)}, () => process.stdout.write('up\\n'))`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise<void>((resolve) => child.stdout?.once('data', () => resolve()));
  const gone = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await gone;
  expect(existsSync(path)).toBe(true);
}

async function liveSocket(path: string): Promise<Server> {
  const s = createServer((c) => c.destroy());
  await new Promise<void>((resolve) => s.listen(path, resolve));
  closers.push(() => new Promise<void>((resolve) => s.close(() => resolve())));
  return s;
}

function server(): NbdServer {
  const mem = new MemoryExport({ name: 'mem', size: 1 << 20 });
  const s = new NbdServer({ exports: (n) => (n === 'mem' ? mem : undefined) });
  closers.push(() => s.close());
  return s;
}

describe('unixSocketState', () => {
  it('tells absent, live, stale and non-socket paths apart; only a stale socket is removed', async () => {
    const absent = join(dir, 'none.sock');
    const live = join(dir, 'live.sock');
    const stale = join(dir, 'stale.sock');
    const file = join(dir, 'file');
    await liveSocket(live);
    await staleSocket(stale);
    await writeFile(file, 'x');
    expect(await unixSocketState(absent)).toBe('absent');
    expect(await unixSocketState(live)).toBe('live');
    expect(await unixSocketState(stale)).toBe('stale');
    expect(await unixSocketState(file)).toBe('not-socket');
    for (const p of [live, file]) expect(await removeStaleSocket(p)).not.toBe('stale');
    expect(await removeStaleSocket(stale)).toBe('stale');
    expect(existsSync(stale)).toBe(false);
    expect(existsSync(live) && existsSync(file)).toBe(true);
  });
});

describe('NbdServer.listen where a server was', () => {
  it('replaces the socket of a server killed with kill -9 and serves on it', async () => {
    const path = join(dir, 'nbd.sock');
    await staleSocket(path);
    const s = server();
    expect(await s.listen({ path })).toEqual({ path });
    const client = await RawClient.connect({ path });
    closers.push(() => client.destroy());
    await client.handshake('mem', {});
  });

  it('keeps a stale socket with replaceStale: false (EBUSY)', async () => {
    const path = join(dir, 'nbd.sock');
    await staleSocket(path);
    await expect(server().listen({ path, replaceStale: false })).rejects.toMatchObject({
      code: 'EBUSY',
      details: { socket: path },
    });
    expect(existsSync(path)).toBe(true);
  });

  it('never takes a socket a live server answers on (EBUSY), nor a file (EINVAL)', async () => {
    const live = join(dir, 'live.sock');
    await liveSocket(live);
    await expect(server().listen({ path: live })).rejects.toMatchObject({
      code: 'EBUSY',
      message: expect.stringMatching(/another server answers on it/),
    });
    expect(await unixSocketState(live)).toBe('live');
    const file = join(dir, 'file');
    await writeFile(file, 'keep me');
    await expect(server().listen({ path: file })).rejects.toMatchObject({ code: 'EINVAL' });
    expect(existsSync(file)).toBe(true);
  });

  it('reports a TCP port in use as EBUSY naming it, and can listen again afterwards', async () => {
    const first = server();
    const { port } = await first.listen({ port: 0 });
    const second = server();
    await expect(second.listen({ port: port as number })).rejects.toMatchObject({
      code: 'EBUSY',
      message: `cannot listen on 127.0.0.1:${port}: the port is in use`,
    });
    expect((await second.listen({ port: 0 })).port).toBeGreaterThan(0);
  });
});
