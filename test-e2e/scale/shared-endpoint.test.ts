/**
 * Issue 18, many volumes per host: one endpoint process serves every volume `vlmc map` maps with
 * one configuration, and a fault of one volume never stops another's I/O.
 *
 * Everything goes through the built `vlmc` and real clients (qemu-io, a raw NBD socket); the bytes
 * are checked by reading them back. One Env for the file; each test maps its own volumes.
 */
import { existsSync } from 'node:fs';
import { open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { abortFuseConnection } from '../../packages/fuse/src/mount.js';
import { pidAlive } from '../../packages/libxseg/src/process.js';
import { Env, requireTool, sh, VLMC } from '../lib/vlmc.js';

interface Row {
  volume: string;
  pid: number;
  uri: string;
  alive: boolean;
  control: string;
}

let env: Env;

beforeAll(async () => {
  requireTool('qemu-io', 'qemu-utils');
  env = await Env.create('scale');
  await Promise.all(['a', 'b', 'c', 'd', 'e', 'f'].map((v) => env.ok('create', v, '--size', '64M')));
});

afterAll(async () => {
  await env?.dispose();
});

async function rows(): Promise<Row[]> {
  const r = await env.vlmc('showmapped', '--json');
  expect(r.code, r.stderr).toBe(0);
  return r.json as Row[];
}

async function mapJson(volume: string, ...args: string[]): Promise<Row> {
  const r = await env.vlmc('map', volume, ...args, '--json');
  if (r.code !== 0) throw new Error(`vlmc map ${volume} failed: ${r.stderr}${r.stdout}`);
  return r.json as Row;
}

/** Maps two volumes, one after the other: one process serves both. */
async function mapPair(x: string, y: string): Promise<[Row, Row]> {
  const a = await mapJson(x);
  const b = await mapJson(y);
  expect(b.pid).toBe(a.pid);
  return [a, b];
}

/** qemu-io commands on an NBD URI; its output. */
async function qio(uri: string, ...cmds: string[]): Promise<string> {
  const r = await sh('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri]);
  return r.stdout + r.stderr;
}

async function writeVerified(uri: string, byte: number, off: string, len = '1M'): Promise<void> {
  const out = await qio(uri, `write -P ${byte} ${off} ${len}`, `read -P ${byte} ${off} ${len}`);
  expect(out).toMatch(/wrote \d+\/\d+ bytes/);
  expect(out).toMatch(/read \d+\/\d+ bytes/);
  expect(out).not.toMatch(/Pattern verification failed|error/i);
}

async function findFile(dir: string, name: string): Promise<string> {
  const all = (await readdir(dir, { recursive: true })) as string[];
  const hit = all.find((f) => f === name || f.endsWith(`/${name}`));
  if (!hit) throw new Error(`no ${name} under ${dir}`);
  return join(dir, hit);
}

async function unmapAll(): Promise<void> {
  for (const e of await rows()) await env.ok('unmap', e.volume);
}

describe('one endpoint process serves all the mapped volumes of a configuration', () => {
  it('maps two volumes in one process; unmapping one leaves the other served; the last unmap ends it', async () => {
    const a = await mapJson('a');
    const b = await mapJson('b');
    expect(b.pid).toBe(a.pid);
    expect((await rows()).map((e) => [e.volume, e.pid, e.alive])).toEqual([
      ['a', a.pid, true],
      ['b', a.pid, true],
    ]);
    // Each volume keeps its own socket and bytes.
    await writeVerified(a.uri, 0x11, '0');
    await writeVerified(b.uri, 0x22, '0');
    expect(await qio(a.uri, 'read -P 0x11 0 1M')).not.toMatch(/verification failed/);
    // Its own control channel: info and snapshot of a mapped volume go to the shared process.
    expect((await env.vlmc('snapshot', 'a', 'a-s1')).code).toBe(0);

    await env.ok('unmap', 'a');
    expect((await rows()).map((e) => e.volume)).toEqual(['b']);
    expect(pidAlive(a.pid)).toBe(true);
    await writeVerified(b.uri, 0x23, '1M');
    expect(await qio(b.uri, 'read -P 0x22 0 1M')).not.toMatch(/verification failed/);
    const info = (await env.vlmc('info', 'a', '--json')).json as { lockOwner: string | null };
    expect(info.lockOwner, 'a unmapped: its lock released').toBeNull();

    await env.ok('unmap', 'b');
    expect(pidAlive(a.pid), 'its last volume unmapped: the process exits').toBe(false);
    const left = (await readdir(join(env.dir, 'run'))).filter(
      (f) => f.endsWith('.ctl') || f.endsWith('.sock'),
    );
    expect(left).toEqual([]);
  });

  it('concurrent vlmc map of 4 volumes starts one process', async () => {
    const mapped = await Promise.all(['a', 'b', 'c', 'd'].map((v) => mapJson(v)));
    const pids = new Set(mapped.map((m) => m.pid));
    expect(pids.size).toBe(1);
    await writeVerified(mapped[3]!.uri, 0x33, '2M');
    await unmapAll();
  });

  it('a map racing the last unmap is not lost', async () => {
    // Whichever wins, c is served: by the process (before it decided to exit) or by a new one.
    const a = await mapJson('a');
    const [, c] = await Promise.all([env.ok('unmap', 'a'), mapJson('c')]);
    expect((await rows()).map((e) => [e.volume, e.alive])).toEqual([['c', true]]);
    expect(await qio(c.uri, 'read 0 4k')).toMatch(/read 4096\/4096 bytes/);
    await env.ok('unmap', 'c');
    expect(pidAlive(a.pid) || pidAlive(c.pid)).toBe(false);
  });

  it("a fault in one volume (fenced by another host, garbage on its sockets, failing maps and control requests) does not stop another's I/O", async () => {
    const [a, b] = await mapPair('e', 'f');
    await writeVerified(a.uri, 0x51, '0');
    await writeVerified(a.uri, 0x52, '8M');
    // b's I/O runs all along: rounds of a 1 MiB write and its verified read, each over a new
    // connection, until two rounds completed after the last fault.
    const ends: number[] = [];
    let stop = false;
    const busy = (async () => {
      for (let i = 0; !stop; i++) {
        const out = await qio(
          b.uri,
          `write -P ${0x60 + (i % 16)} ${i % 16}M 1M`,
          `read -P ${0x60 + (i % 16)} ${i % 16}M 1M`,
        );
        if (
          !/wrote 1048576\/1048576 bytes[\s\S]*read 1048576\/1048576 bytes/.test(out) ||
          /fail|error/i.test(out)
        )
          throw new Error(`f's I/O round ${i} failed: ${out}`);
        ends.push(Date.now());
      }
    })();
    busy.catch(() => {
      stop = true;
    });

    // Garbage on a's NBD socket and a's control socket.
    for (const path of [`${join(env.dir, 'run')}/e.sock`, a.control]) {
      await new Promise<void>((resolve) => {
        const s = connect(path, () => s.end(Buffer.alloc(4096, 0xa5)));
        s.on('error', () => resolve());
        s.on('close', () => resolve());
        s.resume();
      });
    }
    // a's process survived the garbage: a still serves its bytes.
    expect(await qio(a.uri, 'read -P 0x51 0 1M')).not.toMatch(/fail|error/i);
    // A map the process fails (no such volume), a map of a volume it serves already.
    const nope = await env.vlmc('map', 'no-such-volume');
    expect(nope.stderr).toMatch(/^vlmc: ENOENT_VOLUME: /);
    expect((await env.vlmc('map', 'e')).stderr).toMatch(/^vlmc: EBUSY: "e" is already mapped/);
    // Requests its control handlers fail on (a snapshot name taken, a rollback to nothing).
    expect((await env.vlmc('snapshot', 'e', 'e-s1')).code).toBe(0);
    expect((await env.vlmc('snapshot', 'e', 'e-s1')).stderr).toMatch(/EEXIST/);
    expect((await env.vlmc('rollback', 'e', 'nothing-here')).code).not.toBe(0);
    // Another host takes e's lock behind the endpoint's back: e is fenced at its next flush.
    const lockFile = await findFile(join(env.dir, 'maps'), 'e_lock');
    await writeFile(lockFile, 'elsewhere_embedded\n');
    const fenced = await qio(a.uri, 'write -P 0x77 16M 64k', 'flush');
    expect(fenced).toMatch(/flush failed|error/i);
    expect(await readFile(join(env.dir, 'run', 'e.log'), 'utf8')).toMatch(/fenced: volume e/);

    const faulted = Date.now();
    while (!stop && ends.filter((t) => t > faulted).length < 2) await new Promise((r) => setTimeout(r, 20));
    stop = true;
    await busy;
    expect(ends.length).toBeGreaterThan(3);
    // b still serves its bytes; the process is the same.
    expect(await qio(b.uri, `read -P 0x60 0 1M`)).not.toMatch(/fail/);
    expect((await rows()).every((e) => e.pid === a.pid && e.alive)).toBe(true);
    await env.vlmc('unmap', 'e');
    await env.ok('unmap', 'f');
    await rm(lockFile, { force: true });
  });

  it.skipIf(process.getuid?.() !== 0 || !existsSync('/dev/fuse'))(
    "a FUSE connection of one volume aborted under it: the other volumes' I/O goes on, its unmap works",
    async () => {
      const file = join(env.dir, 'c.img');
      const c = await mapJson('c', '--fuse', file);
      const d = await mapJson('d');
      expect(d.pid).toBe(c.pid);
      // showmapped shows the FUSE file in its table (issue 19), and --json keeps it.
      expect((await env.vlmc('showmapped')).stdout).toMatch(
        new RegExp(`^c\\s+\\S+\\s+-\\s+${file}\\s+-\\s+${c.pid}\\s+mapped`, 'm'),
      );
      expect((await rows()).find((e) => e.volume === 'c')).toMatchObject({ fuse: file });
      const fd = await open(file, 'r+');
      await fd.write(Buffer.alloc(65536, 0x91), 0, 65536, 0);
      await fd.sync();
      expect(await abortFuseConnection(file)).toBe(true);
      // c's file fails now (the kernel aborted its connection); c's NBD export and d go on.
      await expect(fd.read(Buffer.alloc(4096), 0, 4096, 0)).rejects.toThrow();
      await fd.close().catch(() => undefined);
      await writeVerified(d.uri, 0x92, '0');
      expect(await qio(c.uri, 'read -P 0x91 0 64k')).not.toMatch(/fail|error/i);
      await env.ok('unmap', 'c');
      await writeVerified(d.uri, 0x93, '1M');
      expect(pidAlive(d.pid)).toBe(true);
      await env.ok('unmap', 'd');
    },
  );

  it('kill -9 of the shared process leaves every entry stale; map again / unmap recover them', async () => {
    const [a, b] = await mapPair('a', 'b');
    await writeVerified(a.uri, 0x81, '0');
    await writeVerified(b.uri, 0x82, '0');
    process.kill(a.pid, 'SIGKILL');
    while (pidAlive(a.pid)) await new Promise((r) => setTimeout(r, 5));
    expect(
      (await rows()).filter((e) => e.volume === 'a' || e.volume === 'b').map((e) => [e.volume, e.alive]),
    ).toEqual([
      ['a', false],
      ['b', false],
    ]);
    expect((await env.vlmc('showmapped')).stdout).toMatch(/^a .*stale/m);
    // a mapped again (same socket: a reconnecting client goes on); b cleaned up by unmap.
    const a2 = await mapJson('a');
    expect(a2.pid).not.toBe(a.pid);
    expect(a2.uri).toBe(a.uri);
    expect(await qio(a2.uri, 'read -P 0x81 0 1M')).not.toMatch(/fail/);
    const un = await env.vlmc('unmap', 'b');
    expect(un.code, un.stderr).toBe(0);
    expect(un.stderr + un.stdout).toMatch(/stale/);
    const b2 = await mapJson('b');
    expect(b2.pid).toBe(a2.pid);
    expect(await qio(b2.uri, 'read -P 0x82 0 1M')).not.toMatch(/fail/);
    await unmapAll();
  });

  it('ARCHIPELAGO_ENDPOINT_MODE=per-volume starts one process per volume', async () => {
    const vlmc = (...args: string[]) =>
      sh(process.execPath, [VLMC, ...args], {
        env: { ...process.env, ARCHIPELAGO_CONF: env.conf, ARCHIPELAGO_ENDPOINT_MODE: 'per-volume' },
      });
    const a = await vlmc('map', 'a', '--json');
    const b = await vlmc('map', 'b', '--json');
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const pa = (JSON.parse(a.stdout) as Row).pid;
    const pb = (JSON.parse(b.stdout) as Row).pid;
    expect(pa).not.toBe(pb);
    await env.ok('unmap', 'a');
    expect(pidAlive(pb)).toBe(true);
    await env.ok('unmap', 'b');
    expect(pidAlive(pa) || pidAlive(pb)).toBe(false);
  });
});
