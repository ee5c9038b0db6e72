/**
 * Durability of `vlmc map` in both sync modes of the data blocker, watched from outside: strace
 * on the endpoint shows which object files it fdatasyncs, and kill -9 of the endpoint shows what
 * a client was told is safe survives it.
 *
 * - The default (no `sync` key: blockerb writes back, NBD's contract): a WRITE is acknowledged
 *   without an fdatasync of its object; FLUSH fdatasyncs every object written since; after
 *   kill -9 and `vlmc map` again, the flushed bytes read back.
 * - `sync = always`: every WRITE fdatasyncs its object before it is acknowledged.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Env, requireTool, sh } from '../lib/vlmc.js';

const MiB = 1024 * 1024;

/** Python for nbdsh: writes 64 KiB of `byte` at each offset (4 MiB blocks: two objects), then `flush`es or not. */
const writes = (byte: number, flush: boolean) =>
  `for off in (0, ${5 * MiB}):\n    h.pwrite(bytes([${byte}]) * 65536, off)\n${flush ? 'h.flush()\n' : ''}`;

/** strace attached to every thread of `pid`, logging fdatasync/fsync with the files' paths. */
async function traceSyncs(
  pid: number,
  out: string,
): Promise<{ child: ChildProcess; stop(): Promise<string> }> {
  const child = spawn(
    'strace',
    ['-f', '-y', '-qq', '-e', 'trace=fdatasync,fsync', '-o', out, '-p', String(pid)],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  // strace attaches before it starts reading the tracee; give it a moment to attach every thread.
  await new Promise((r) => setTimeout(r, 500));
  return {
    child,
    async stop() {
      child.kill('SIGINT');
      await new Promise((r) => child.once('exit', r));
      return readFileSync(out, 'utf8');
    },
  };
}

/** Lines of an strace log that fdatasync an object file of the data directory (`<dir>/blocks`). */
const objectSyncs = (log: string, dir: string) =>
  log.split('\n').filter((l) => /\bfdatasync\(/.test(l) && l.includes(`${dir}/blocks/`));

async function endpointPid(env: Env, volume: string): Promise<number> {
  const rows = (await env.vlmc('showmapped', '--json')).json as Array<{ volume: string; pid: number }>;
  const e = rows.find((r) => r.volume === volume);
  if (!e) throw new Error(`${volume} is not mapped`);
  return e.pid;
}

const blockers = (sync: string | null) => (dir: string) =>
  [
    '[blockerb]',
    'type = file_blocker',
    `archip_dir = ${dir}/blocks`,
    ...(sync ? [`sync = ${sync}`] : []),
    '[blockerm]',
    'type = file_blocker',
    `archip_dir = ${dir}/maps`,
  ].join('\n');

describe.each([
  { mode: 'default (write-back)', sync: null },
  { mode: 'sync = always', sync: 'always' },
])('vlmc map, $mode', ({ sync }) => {
  let env: Env;
  beforeAll(async () => {
    requireTool('nbdsh', 'libnbd-bin + python3-libnbd');
    requireTool('strace', 'strace');
    env = await Env.create('wb', blockers(sync));
    await env.ok('create', 'v', '--size', '16M');
  });
  afterAll(async () => {
    await env?.dispose();
  });

  it(sync === null
    ? 'acknowledges WRITEs unsynced, fdatasyncs at FLUSH; flushed writes survive kill -9 of the endpoint'
    : 'fdatasyncs every WRITE before acknowledging it; the writes survive kill -9 of the endpoint', async () => {
    const uri = await env.ok('map', 'v');
    const pid = await endpointPid(env, 'v');
    const trace = await traceSyncs(pid, join(env.dir, 'strace.log'));
    let log: string;
    try {
      // Blocks are fresh: the writes create two objects (and write two map entries).
      const w = await sh('nbdsh', ['-u', uri, '-c', writes(0x5a, false)]);
      expect(w.code, w.stderr).toBe(0);
      await new Promise((r) => setTimeout(r, 200)); // strace writes its log as it goes
      const beforeFlush = objectSyncs(readFileSync(join(env.dir, 'strace.log'), 'utf8'), env.dir);
      if (sync === null) expect(beforeFlush, 'no object is synced before FLUSH').toEqual([]);
      else expect(beforeFlush.length, 'every WRITE synced its object').toBeGreaterThanOrEqual(2);
      // Overwrite the same bytes' places, this time with FLUSH.
      const f = await sh('nbdsh', ['-u', uri, '-c', writes(0xa5, true)]);
      expect(f.code, f.stderr).toBe(0);
    } finally {
      log = await trace.stop();
    }
    // The two objects were fdatasynced by the time FLUSH (or each WRITE) was acknowledged.
    const synced = new Set(objectSyncs(log, env.dir).map((l) => /<([^>]+)>/.exec(l)?.[1]));
    expect(synced.size, log).toBe(2);

    process.kill(pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 100));
    const again = await env.ok('map', 'v'); // the dead endpoint's mapping is taken over
    expect(await endpointPid(env, 'v')).not.toBe(pid);
    const r = await sh('nbdsh', [
      '-u',
      again,
      '-c',
      `for off in (0, ${5 * MiB}):\n    assert h.pread(65536, off) == bytes([0xa5]) * 65536, off\n` +
        `assert h.pread(65536, ${2 * MiB}) == bytes(65536)\n`,
    ]);
    expect(r.code, r.stderr).toBe(0);
    await env.ok('unmap', 'v');
  }, 30_000);
});
