/**
 * `vlmc map` after an endpoint died, and what it still refuses, as a user sees it (the built vlmc,
 * embedded wiring): what a killed endpoint left (its entry, its sockets, its lock, even its pid
 * reused by another process) never stops a map; a socket or port in use by a live endpoint of
 * another volume or by another process, a file that is no socket, a missing directory are refused
 * with one line naming the cause, never a stack.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it, onTestFinished } from 'vitest';
import { pidAlive } from '../../packages/libxseg/src/process.js';
import { lockRecord, makeTarget, mapOk, mapped, sleep, type Target } from './helpers.js';

let t: Target | undefined;
afterEach(async () => {
  await t?.dispose();
  t = undefined;
});

/** A server of another process's kind on `path` (or an ephemeral 127.0.0.1 port), closed after the test. */
async function listenOn(path?: string): Promise<Server> {
  const s = createServer((c) => c.destroy());
  onTestFinished(() => void s.close());
  await new Promise<void>((resolve) => (path ? s.listen(path, resolve) : s.listen(0, '127.0.0.1', resolve)));
  return s;
}

/** `vlmc map` fails with exit 1 and one line `vlmc: CODE: message` on stderr. */
async function refused(args: string[], code: string, message: RegExp): Promise<void> {
  const r = await (t as Target).vlmc('map', ...args);
  expect(r.code, r.stdout).toBe(1);
  const lines = r.stderr.trim().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^vlmc: ${code}: `));
  expect(lines[0]).toMatch(message);
}

async function kill9(pid: number): Promise<void> {
  process.kill(pid, 'SIGKILL');
  while (pidAlive(pid)) await sleep(5);
}

describe('vlmc map after kill -9 of the endpoint', () => {
  it('maps again on the same custom socket; unmap of a stale mapping clears its socket and lock', async () => {
    t = await makeTarget('embedded');
    for (const v of ['a', 'b']) expect((await t.vlmc('create', v, '--size', '8M')).code).toBe(0);
    mkdirSync(join(t.dir, 'vm'));
    const sock = join(t.dir, 'vm', 'a.sock');
    const first = await mapOk(t, 'a', '--socket', sock);
    await kill9(first.pid);
    expect(existsSync(sock)).toBe(true); // left behind: bind() on it fails with EADDRINUSE
    const st = await t.vlmc('showmapped');
    expect(st.stdout).toMatch(/a\s+nbd\+unix:\/\/\/a\?socket=\S+(\s+-){3}\s+\d+\s+stale/);

    const second = await mapOk(t, 'a', '--socket', sock);
    expect(second.socket).toBe(sock);
    expect(lockRecord(join(t.dir, 'maps'), 'a')?.process?.pid).toBe(second.pid);

    await kill9(second.pid);
    const un = await t.vlmc('unmap', 'a');
    expect(un.code, un.stderr).toBe(0);
    expect(un.stdout).toMatch(/removed stale mapping of a \(pid \d+ was gone\)/);
    expect(existsSync(sock)).toBe(false);
    expect(lockRecord(join(t.dir, 'maps'), 'a')).toBeNull();
  });

  it('a dead endpoint whose pid another process now has is stale, not "already mapped"', async () => {
    t = await makeTarget('embedded');
    expect((await t.vlmc('create', 'a', '--size', '8M')).code).toBe(0);
    const first = await mapOk(t, 'a');
    await kill9(first.pid);
    const file = join(t.runDir, 'a.json');
    const entry = JSON.parse(readFileSync(file, 'utf8')) as { pid: number; start: string };
    expect(entry.start).toMatch(/^\d+$/);
    writeFileSync(file, JSON.stringify({ ...entry, pid: process.pid })); // this pid, another start time
    expect((await mapped(t, 'a'))?.pid).toBe(process.pid);
    expect((await t.vlmc('showmapped')).stdout).toMatch(/stale/);
    const again = await mapOk(t, 'a');
    expect(again.pid).not.toBe(process.pid);
  });
});

describe('vlmc map refusals: one line naming the cause', () => {
  it('socket or port of another live endpoint, another process, a file, no directory, already mapped', async () => {
    t = await makeTarget('embedded');
    for (const v of ['a', 'b']) expect((await t.vlmc('create', v, '--size', '8M')).code).toBe(0);
    const a = await mapOk(t, 'a');
    const sockA = a.socket as string;

    await refused(['a'], 'EBUSY', /"a" is already mapped at .* \(pid \d+\); "vlmc unmap a" first/);
    await refused(
      ['b', '--socket', sockA],
      'EBUSY',
      new RegExp(`socket ${sockA} is in use by the endpoint of "a" \\(pid ${a.pid}\\)`),
    );
    const foreign = join(t.dir, 'foreign.sock');
    await listenOn(foreign);
    await refused(['b', '--socket', foreign], 'EBUSY', /foreign\.sock is in use by another process/);
    const file = join(t.dir, 'file.sock');
    writeFileSync(file, 'keep');
    await refused(['b', '--socket', file], 'EINVAL', /file\.sock: it exists and is not a socket/);
    expect(readFileSync(file, 'utf8')).toBe('keep');
    await refused(['b', '--socket', join(t.dir, 'nodir', 'b.sock')], 'EINVAL', /nodir is not a directory/);

    const onPort = await mapOk(t, 'b', '--port', '0');
    expect((await t.vlmc('unmap', 'a')).code).toBe(0);
    await refused(
      ['a', '--port', String(onPort.port)],
      'EBUSY',
      new RegExp(`port ${onPort.port} is in use by the endpoint of "b"`),
    );
    const busy = await listenOn();
    const port = (busy.address() as { port: number }).port;
    await refused(
      ['a', '--port', String(port)],
      'EBUSY',
      new RegExp(`127\\.0\\.0\\.1:${port}: the port is in use`),
    );

    const json = await t.vlmc('map', 'b', '--json');
    expect(json.code).toBe(1);
    expect(json.json).toMatchObject({ error: { code: 'EBUSY', details: { volume: 'b' } } });
    // Nothing refused left anything behind: a maps fine.
    expect((await mapOk(t, 'a')).socket).toBe(sockA);
  });
});
