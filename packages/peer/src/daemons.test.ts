/**
 * mapperd and vlmcd as processes (the built dist/main.js) on a real segment, with blockerb and
 * blockerm: volume I/O and map changes through SegmentMapper and SegmentVolumes; random bytes in
 * requests sent to mapperd and vlmcd get error replies and never kill them; a mapperd logging to
 * syslog sends RFC 5424 LOCAL0 datagrams to a unix socket this test binds (with python3).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ERROR_CODES, Op, XS } from '@archipelago/libxseg';
import type { Segment } from '@archipelago/libxseg/segment';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SegmentMapper } from './clients/segment-mapper.js';
import { SegmentVolumes } from './clients/segment-volumes.js';
import type { PeerOptions } from './options.js';
import { MapperOp } from './protocol/mapper-wire.js';
import { VlmcOp } from './protocol/vlmc-wire.js';
import { decodeError } from './protocol/wire.js';
import { PORTS, peerHarness } from './test-peers.js';

const h = peerHarness('dmtest');
const { dir, base } = h;
const P = PORTS;
const peers = h.fourRoles('test_mapperd');
let seg: Segment;

beforeAll(async () => {
  seg = await h.startAll(peers);
});

afterAll(() => h.teardown());

const MiB = 1 << 20;

describe('mapperd and vlmcd over the segment', () => {
  it('create, write across objects, read, trim, block status, snapshot, clone, rename, resize, remove', async () => {
    const mapper = new SegmentMapper({ segment: seg, port: P.mapperd, trackOpens: true });
    const vols = new SegmentVolumes({ segment: seg, port: P.vlmcd, tracker: mapper });
    try {
      expect((await mapper.hello()).identity).toBe('test_mapperd');
      const info = await mapper.create('v1', { size: 16 * MiB, blocksize: 4 * MiB });
      expect(info).toMatchObject({ name: 'v1', size: 16 * MiB, blocksize: 4 * MiB, readonly: false });
      expect(typeof info.epoch).toBe('bigint');
      const data = randomBytes(3 * MiB);
      await vols.write('v1', 4 * MiB - 100, data, { fua: true });
      expect((await vols.read('v1', 4 * MiB - 100, data.length)).equals(data)).toBe(true);
      // readInto: into the caller's buffer (vlmcd → blockerb uses SegmentBlocker.readInto too)
      const into = Buffer.alloc(data.length + 10, 0xee);
      expect(await vols.readInto('v1', 4 * MiB - 100, into.subarray(5, 5 + data.length))).toHaveLength(
        data.length,
      );
      expect(into.subarray(5, 5 + data.length).equals(data)).toBe(true);
      expect(into.subarray(0, 5).equals(Buffer.alloc(5, 0xee))).toBe(true);
      expect(into.subarray(5 + data.length).equals(Buffer.alloc(5, 0xee))).toBe(true);
      expect(mapper.openVolumes()).toEqual(['v1']); // the write opened it in mapperd
      const segs = await mapper.mapRead('v1', 4 * MiB - 100, 200);
      expect(segs.map((s) => [s.index, s.offset, s.size, s.zero])).toEqual([
        [0, 4 * MiB - 100, 100, false],
        [1, 0, 100, false],
      ]);
      expect(await vols.blockStatus('v1', 0, 16 * MiB)).toEqual([
        { offset: 0, length: 8 * MiB, zero: false },
        { offset: 8 * MiB, length: 8 * MiB, zero: true },
      ]);
      await vols.trim('v1', 4 * MiB, 4 * MiB);
      expect((await vols.read('v1', 4 * MiB, 10)).equals(Buffer.alloc(10))).toBe(true);
      await vols.writeZeroes('v1', 0, 10, { noHole: true });
      expect((await vols.read('v1', 0, 10)).equals(Buffer.alloc(10))).toBe(true);
      await vols.flush('v1');
      expect(await vols.size('v1')).toBe(16 * MiB);
      const snap = await vols.snapshot('v1', 'v1-s');
      expect(snap.readonly).toBe(true);
      await mapper.clone('v1-s', 'v1-c', { size: 20 * MiB });
      expect((await vols.read('v1-c', 4 * MiB - 100, 100)).equals(data.subarray(0, 100))).toBe(true);
      await vols.write('v1-c', 0, Buffer.from('clone'));
      expect((await vols.read('v1', 0, 5)).equals(Buffer.alloc(5))).toBe(true);
      await expect(vols.write('v1-s', 0, Buffer.from('x'))).rejects.toMatchObject({ code: 'EREADONLY' });
      await vols.close('v1-c');
      expect((await mapper.rename('v1-c', 'v1-d')).name).toBe('v1-d');
      expect((await mapper.resize('v1-d', 24 * MiB)).size).toBe(24 * MiB);
      expect((await mapper.list()).map((v) => v.name).sort()).toEqual(['v1', 'v1-d', 'v1-s']);
      expect((await mapper.entries('v1-d')).length).toBe(6);
      await vols.remove('v1-d');
      await expect(mapper.info('v1-d')).rejects.toMatchObject({ code: 'ENOENT_VOLUME' });
      await expect(mapper.create('v1', { size: MiB })).rejects.toMatchObject({ code: 'EEXIST_VOLUME' });
      await vols.close('v1');
      await vols.close('v1-s'); // the refused write opened the snapshot in mapperd
      expect(mapper.openVolumes()).toEqual([]);
      expect((await mapper.hello()).open).toEqual([]);
    } finally {
      await vols.disconnect();
      await mapper.close();
    }
  });

  it('the trash through mapperd: remove, list, restore (refused over a reused name), purge', async () => {
    const mapper = new SegmentMapper({ segment: seg, port: P.mapperd });
    const vols = new SegmentVolumes({ segment: seg, port: P.vlmcd, tracker: mapper });
    try {
      await mapper.create('t1', { size: 8 * MiB, blocksize: 4 * MiB });
      const data = randomBytes(MiB);
      await vols.write('t1', 4 * MiB, data);
      await vols.remove('t1');
      await expect(mapper.info('t1')).rejects.toMatchObject({ code: 'ENOENT_VOLUME' });
      const [e] = (await mapper.listTrash({ ttlMs: 5000 })).filter((x) => x.name === 't1');
      expect(e).toMatchObject({ name: 't1', kind: 'volume', size: 8 * MiB });
      expect(e!.expiresAt).toBe(e!.removedAt + 5000);
      await mapper.create('t1', { size: MiB });
      await expect(mapper.restoreTrash('t1')).rejects.toMatchObject({ code: 'EEXIST_VOLUME' });
      await mapper.remove('t1');
      const info = await mapper.restoreTrash('t1', { entry: e!.entry });
      expect(info).toMatchObject({ name: 't1', size: 8 * MiB, readonly: false });
      expect(typeof info.epoch).toBe('bigint');
      expect((await vols.read('t1', 4 * MiB, MiB)).equals(data)).toBe(true);
      await vols.close('t1');
      const purged = await mapper.purgeExpiredTrash(Date.now());
      expect(purged.filter((x) => x.name === 't1').map((x) => x.size)).toEqual([MiB]);
      expect((await mapper.listTrash()).filter((x) => x.name === 't1')).toEqual([]);
      await expect(mapper.purgeTrash(e!.entry)).rejects.toMatchObject({ code: 'ENOENT_VOLUME' });
    } finally {
      await vols.disconnect();
      await mapper.close();
    }
  });

  it('random bytes in requests get error replies; mapperd and vlmcd keep serving', async () => {
    const port = seg.bindDynamicPort();
    const mapper = new SegmentMapper({ segment: seg, port: P.mapperd });
    const vols = new SegmentVolumes({ segment: seg, port: P.vlmcd });
    const ops = [...Object.values(MapperOp), ...Object.values(VlmcOp), 3, 63, 64, 127, 200, 0xffffff];
    const pick = <T>(a: readonly T[]): T => a[Math.floor(Math.random() * a.length)] as T;
    const targets = () =>
      pick([
        '',
        'fuzz',
        randomBytes(8).toString('hex'),
        randomBytes(40).toString('latin1').slice(0, 40),
        'x'.repeat(200),
        '../../etc/passwd',
      ]);
    try {
      await mapper.create('fz', { size: 8 * MiB });
      let failed = 0;
      for (let i = 0; i < 400; i++) {
        const dst = i % 2 === 0 ? P.mapperd : P.vlmcd;
        const data = randomBytes(Math.floor(Math.random() * 600));
        const r = await port.call({
          dst,
          op: pick(ops),
          target: Math.random() < 0.2 ? 'fz' : targets(),
          offset: pick([0, 1, 4096, 2 ** 40, Number.MAX_SAFE_INTEGER, Math.floor(Math.random() * 8 * MiB)]),
          size: pick([0, 1, data.length, 1 << 30, Math.floor(Math.random() * 4096)]),
          flags: Math.floor(Math.random() * 0x800),
          data,
        });
        if (!r.ok) {
          failed++;
          expect(r.state & XS.FAILED).toBeTruthy();
          const e = decodeError(Buffer.from(r.data), 'fuzz', dst === P.mapperd ? 'mapperd' : 'vlmcd');
          expect(e.details.failedBySegment, `op ${r.op}: no error payload (peer died?)`).toBeUndefined();
          expect(Object.keys(ERROR_CODES)).toContain(e.code);
        }
        r.release();
      }
      expect(failed).toBeGreaterThan(200);
      for (const c of h.children.values()) expect(c.exitCode).toBeNull();
      // (the fuzzing may have removed, renamed or resized "fz": a new volume shows they still serve)
      await mapper.create('alive', { size: MiB });
      await vols.write('alive', 0, Buffer.from('alive'));
      expect((await vols.read('alive', 0, 5)).toString()).toBe('alive');
      await vols.close('alive');
    } finally {
      port.close();
      await vols.disconnect();
      await mapper.close();
    }
  }, 60_000);

  it('a request to a wrong peer gets ENOTSUP, not a misreading', async () => {
    const port = seg.bindDynamicPort();
    try {
      for (const [dst, op] of [
        [P.mapperd, VlmcOp.BLOCKSTATUS],
        [P.vlmcd, MapperOp.LIST],
        [P.vlmcd, Op.MAPW],
        [P.mapperd, Op.READ],
      ] as const) {
        const r = await port.call({ dst, op, target: 'v1' });
        expect(decodeError(Buffer.from(r.data), 'x').code, `port ${dst} op ${op}`).toBe('ENOTSUP');
        r.release();
      }
    } finally {
      port.close();
    }
  });
});

describe('syslog', () => {
  it('a peer with logfile syslog:<socket> sends RFC 5424 LOCAL0 messages to that socket', async () => {
    const sock = join(dir, 'log.sock');
    const py = spawn(
      '/usr/bin/python3',
      [
        '-c',
        `import socket,sys
s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM); s.bind(sys.argv[1]); print("ready",flush=True)
while True:
    m=s.recv(65536).decode("utf8","replace"); print(m.replace("\\n"," "),flush=True)`,
        sock,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let got = '';
    py.stdout?.on('data', (d: Buffer) => {
      got += d.toString();
    });
    try {
      const end = Date.now() + 20_000; // a loaded CI machine: python and the peer start slowly
      while (!got.includes('ready')) {
        if (Date.now() > end) throw new Error('python3 did not bind the socket');
        await new Promise((r) => setTimeout(r, 20));
      }
      const o: PeerOptions = {
        ...base('mapperd', 9),
        pidfile: join(dir, 'run/mapperd2.pid'),
        logfile: `syslog:${sock}`,
        mapperd: {
          type: 'mapperd',
          blockerbPort: P.blockerb,
          blockermPort: P.blockerm,
          identity: 'test2_mapperd',
        },
      };
      const child = await h.start(o);
      const until = Date.now() + 20_000;
      while (!/mapperd started/.test(got) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      // <134> = LOCAL0 (16) * 8 + info (6); "1" = RFC 5424 version; the tag names the role.
      expect(got).toMatch(/<134>1 \S+ \S+ archipelago-mapperd \S+ - .*"msg":"mapperd started"/);
      child.kill('SIGUSR2');
      const until2 = Date.now() + 20_000;
      while (!/log level changed/.test(got) && Date.now() < until2)
        await new Promise((r) => setTimeout(r, 20));
      expect(got).toMatch(/<132>1 .*log level changed/); // warning = 4
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    } finally {
      py.kill('SIGKILL');
    }
  });
});
