import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { ArchipelagoError } from '../errors.js';
import { Op, XS } from '../protocol.js';
import { harness, killed, until } from './__fixtures__/harness.js';
import { type Port, Segment, type XsegReply } from './index.js';

const { fresh, peer, serve } = harness('xsegtest');

describe('segment lifecycle', () => {
  it('creates, joins and destroys by name under /dev/shm', () => {
    const spec = fresh();
    const name = spec.split(':')[1] as string;
    const a = Segment.create(spec);
    expect(existsSync(`/dev/shm/${name}`)).toBe(true);
    expect(() => Segment.create(spec)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    const b = Segment.join(`posix:${name}:`);
    expect(b.geometry()).toMatchObject({ nrPorts: 8, dynports: 4 });
    a.close();
    b.close();
    Segment.destroy(name);
    expect(existsSync(`/dev/shm/${name}`)).toBe(false);
    expect(() => Segment.join(spec)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('checks magic and version on join', () => {
    const spec = fresh();
    const name = spec.split(':')[1] as string;
    Segment.create(spec).close();
    const fd = openSync(`/dev/shm/${name}`, 'r+');
    writeSync(fd, Buffer.from([99, 0, 0, 0]), 0, 4, 8); // version
    closeSync(fd);
    expect(() => Segment.join(spec)).toThrow(/version 99/);
    const fd2 = openSync(`/dev/shm/${name}`, 'r+');
    writeSync(fd2, Buffer.from('NOTXSEG!'), 0, 8, 0);
    closeSync(fd2);
    const err = (() => {
      try {
        Segment.join(spec);
      } catch (e) {
        return e;
      }
    })();
    expect(ArchipelagoError.is(err, 'EIO')).toBe(true);
    expect((err as ArchipelagoError).details.corrupt).toBe(true);
  });

  it('importing the protocol entry point loads no addon', () => {
    const dist = fileURLToPath(new URL('../../dist/index.js', import.meta.url));
    const out = execFileSync(process.execPath, [
      '--input-type=module',
      '-e',
      `const o = process.dlopen; process.dlopen = (...a) => { console.log('DLOPEN ' + a[1]); return o(...a); };
       await import(${JSON.stringify(dist)}); console.log('ok');`,
    ]).toString();
    expect(out.trim()).toBe('ok');
  });

  it('binds static and dynamic ports and refuses a port a live process holds', async () => {
    const spec = fresh();
    const seg = Segment.create(spec);
    const p = seg.bindPort(0);
    const d = seg.bindDynamicPort();
    expect(d.number).toBe(4);
    expect(() => seg.bindPort(5)).toThrow(RangeError);
    const srv = await serve(spec, 1);
    expect(() => seg.bindPort(1)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    srv.child.send({ cmd: 'exit' });
    await killed(srv.child);
    p.close();
    d.close();
    seg.close();
  });
});

describe('requests between processes', () => {
  it('round-trips reads and writes with zero-copy data', async () => {
    const spec = fresh();
    const seg = Segment.create(spec);
    await serve(spec, 1);
    const cli = seg.bindDynamicPort().unref();
    const r = await cli.call({ dst: 1, op: Op.READ, target: 'vol_1', offset: 0x42, size: 8192 });
    expect(r.ok).toBe(true);
    expect(r.serviced).toBe(8192);
    expect(r.data.length).toBe(8192);
    expect(r.data.every((b) => b === 0x42)).toBe(true);
    expect(r.target).toBe('vol_1');
    r.release();
    const prepared = cli.prepare(3 * 4096);
    prepared.data.fill(1);
    const w = await prepared.call({ dst: 1, op: Op.WRITE, target: 'x', size: 3 * 4096 });
    expect(w.ok).toBe(true);
    expect(w.data.toString()).toBe('3');
    w.release();
    const bad = await cli.call({ dst: 1, op: Op.PING });
    expect(bad.ok).toBe(false);
    expect(bad.state & XS.FAILED).toBe(XS.FAILED);
    bad.release();
    seg.close();
  });

  it('keeps many requests in flight and leaves the heap whole', async () => {
    const spec = fresh('4:8:128:12');
    const seg = Segment.create(spec);
    await serve(spec, 1);
    await serve(spec, 2);
    const cli = seg.bindDynamicPort().unref();
    const sizes = Array.from({ length: 600 }, (_, i) => 512 + ((i * 7919) % 64) * 1024);
    const replies = await Promise.all(
      sizes.map((size, i) => cli.call({ dst: 1 + (i % 2), op: Op.READ, offset: i, size })),
    );
    replies.forEach((r, i) => {
      expect(r.ok).toBe(true);
      expect(r.data.length).toBe(sizes[i]);
      expect(r.data[0]).toBe(i & 0xff);
      r.release();
    });
    const rep = seg.report();
    expect(rep.heap.used).toBe(0);
    expect(rep.heap.freeChunks).toBe(1);
    expect(rep.requests.free).toBe(rep.requests.total);
    seg.close();
  });

  it('a reply dropped unreleased is released when garbage-collected, unless called with { tracked: false }', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const spec = fresh();
    const seg = Segment.create(spec);
    await serve(spec, 1);
    const cli = seg.bindDynamicPort().unref();
    const held = () => seg.report().requests.total - seg.report().requests.free;
    const drop = async (tracked: boolean) => {
      const r = await cli.call({ dst: 1, op: Op.READ, size: 4096 }, { tracked });
      expect(r.ok).toBe(true); // and dropped here, unreleased
    };
    const collect = async () => {
      for (let i = 0; i < 10; i++) {
        gc();
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    await drop(true);
    expect(held()).toBe(1);
    await collect();
    expect(held()).toBe(0); // the FinalizationRegistry released it
    // Holding only the data keeps the request: it is that shared memory.
    let data: Buffer | null = (await cli.call({ dst: 1, op: Op.READ, size: 4096 })).data;
    await collect();
    expect(held()).toBe(1);
    expect(data.length).toBe(4096);
    data = null;
    await collect();
    expect(held()).toBe(0);
    await drop(false);
    await collect();
    expect(held()).toBe(1); // the caller promised to release it: nothing did
    const r = await cli.call({ dst: 1, op: Op.READ, size: 4096 }, { tracked: false });
    expect(held()).toBe(2);
    r.release();
    expect(held()).toBe(1);
    seg.close();
  });

  it('batches replies that arrive together through onReply', async () => {
    const spec = fresh();
    const seg = Segment.create(spec);
    await serve(spec, 1);
    const cli = seg.bindDynamicPort().unref();
    const got: number[] = [];
    cli.onReply((r) => got.push(r.offset));
    for (let i = 0; i < 200; i++) cli.submit({ dst: 1, op: Op.READ, offset: i, size: 64 });
    await until(() => got.length === 200);
    expect(got.sort((a, b) => a - b)).toEqual(Array.from({ length: 200 }, (_, i) => i));
    expect(seg.report().requests.free).toBe(seg.report().requests.total);
    seg.close();
  });
});

describe('heap', () => {
  it('frees and coalesces: random alloc/free patterns end with one free block', () => {
    const seg = Segment.create(fresh('4:8:32:12'));
    const port = seg.bindPort(0);
    let seed = 7;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    for (let round = 0; round < 5; round++) {
      const live = Array.from({ length: 300 }, () => port.prepare(1 + (rnd() % 100_000)));
      for (const p of live) p.data[0] = 1;
      // free in random order, interleaved with more allocations
      while (live.length) {
        const [p] = live.splice(rnd() % live.length, 1);
        p?.release();
        if (rnd() % 4 === 0) port.prepare(rnd() % 50_000).release();
      }
      const h = seg.report().heap;
      expect(h.used).toBe(0);
      expect(h.freeChunks).toBe(1);
      expect(h.largestFree).toBe(h.size);
    }
    // the whole heap can be taken in one piece again
    const big = port.prepare(31 * 2 ** 20);
    expect(big.data.length).toBe(31 * 2 ** 20);
    big.release();
    expect(() => port.prepare(64 * 2 ** 20)).toThrow(expect.objectContaining({ code: 'ENOSPC' }));
    seg.close();
  });

  it('keeps the mapping alive while a Buffer references it', () => {
    const spec = fresh();
    const seg = Segment.create(spec);
    const p = seg.bindPort(0).prepare(4096);
    p.data.fill(9);
    const data = p.data;
    seg.close();
    expect(data[4095]).toBe(9); // still mapped: no segfault
  });
});

describe('crash recovery', () => {
  /** A peer serving port 1 that accepts and never answers: it holds `n` READs of ours. */
  async function holding(n: number) {
    const spec = fresh();
    const seg = Segment.create(spec);
    const srv = await serve(spec, 1, 'hold');
    const cli = seg.bindDynamicPort().unref();
    const pending = Array.from({ length: n }, (_, i) =>
      cli.call({ dst: 1, op: Op.READ, offset: i, size: 4096 }),
    );
    await until(() => seg.report().requests.accepted === n);
    return { spec, seg, srv, cli, pending };
  }

  it('fails back requests a SIGKILLed peer had accepted (recoverport), then serves again', async () => {
    const { spec, seg, srv, cli, pending } = await holding(5);
    expect(() => seg.recoverPort(1)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    srv.child.kill('SIGKILL');
    await killed(srv.child);
    expect(seg.recoverPort(1)).toEqual({ port: 1, failed: 5, freed: 0 });
    const replies = await Promise.all(pending);
    for (const r of replies) {
      expect(r.ok).toBe(false);
      r.release();
    }
    const again = await serve(spec, 1);
    const r = await cli.call({ dst: 1, op: Op.READ, offset: 3, size: 100 });
    expect(r.ok).toBe(true);
    r.release();
    const rep = seg.report();
    expect(rep.requests.free).toBe(rep.requests.total);
    expect(rep.heap.used).toBe(0);
    again.child.send({ cmd: 'exit' });
    seg.close();
  });

  it('recovers automatically when the restarted peer rebinds its port', async () => {
    const { spec, seg, srv, cli, pending } = await holding(3);
    srv.child.kill('SIGKILL');
    await killed(srv.child);
    // queued behind the dead peer: served by its next incarnation
    const queued = cli.call({ dst: 1, op: Op.READ, offset: 9, size: 10 });
    const again = await serve(spec, 1);
    expect(again.ready.recovered).toMatchObject({ failed: 3 });
    for (const r of await Promise.all(pending)) expect(r.ok).toBe(false);
    const q = await queued;
    expect(q.ok).toBe(true);
    expect(q.data[0]).toBe(9);
    seg.close();
  });

  it('a lock held by a SIGKILLed peer is reclaimed by recoverlocks', async () => {
    const spec = fresh();
    const seg = Segment.create(spec);
    const p = peer();
    await p.next('started');
    p.child.send({ cmd: 'holdlock', spec, which: 'port', port: 2 });
    const { pid } = (await p.next('locked')) as unknown as { pid: number };
    expect(seg.report().locks).toContainEqual({ name: 'port 2', ownerPid: pid, ownerAlive: true });
    expect(() => seg.recoverLocks(pid)).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    p.child.kill('SIGKILL');
    await killed(p.child);
    expect(seg.report().locks).toContainEqual({ name: 'port 2', ownerPid: pid, ownerAlive: false });
    expect(seg.recoverLocks(pid)).toBe(1);
    expect(seg.report().locks.filter((l) => l.ownerPid !== 0)).toEqual([]);
    seg.close();
  });

  it('a heap lock held by a SIGKILLed peer is recovered by the next user (robust mutex)', async () => {
    const spec = fresh();
    const seg = Segment.create(spec);
    await serve(spec, 1);
    const p = peer();
    await p.next('started');
    p.child.send({ cmd: 'holdlock', spec, which: 'heap' });
    await p.next('locked');
    p.child.kill('SIGKILL');
    await killed(p.child);
    const cli = seg.bindDynamicPort().unref();
    const r = await cli.call({ dst: 1, op: Op.READ, offset: 1, size: 4096 });
    expect(r.ok).toBe(true);
    r.release();
    expect(seg.report().locks.filter((l) => l.ownerPid !== 0)).toEqual([]);
    expect(seg.report().heap.used).toBe(0);
    seg.close();
  });
});

describe('corrupt segment', () => {
  function scribble(name: string, at: number, bytes: Buffer) {
    const fd = openSync(`/dev/shm/${name}`, 'r+');
    writeSync(fd, bytes, 0, bytes.length, at);
    closeSync(fd);
  }

  async function setup() {
    const spec = fresh();
    const name = spec.split(':')[1] as string;
    const seg = Segment.create(spec);
    const g = seg.geometry() as unknown as Record<string, number>;
    const srv: Port = seg.bindPort(1); // no handler yet: requests wait in its queue
    const cli = seg.bindDynamicPort().unref();
    const errors: ArchipelagoError[] = [];
    let served = 0;
    /** Serves port 1 from now on: answers every request, counts them, collects the errors met. */
    const start = () => {
      srv
        .onError((e) => errors.push(e))
        .onRequest((req) => {
          served++;
          srv.respond(req);
        });
    };
    return { spec, name, seg, g, cli, errors, start, served: () => served };
  }

  it('random bytes in queued requests give error replies or errors, never a crash', async () => {
    const { name, seg, g, cli, errors, start, served } = await setup();
    const replies: XsegReply[] = [];
    const calls = Array.from({ length: 30 }, (_, i) => {
      const p = cli.call({ dst: 1, op: Op.READ, target: `t${i}`, offset: i, size: 4096 });
      void p.then((r) => replies.push(r));
      return p;
    });
    await new Promise((r) => setTimeout(r, 20));
    // scribble everything after the list links of the first 20 requests (which are 0..19)
    const handles = Array.from({ length: 20 }, (_, i) => i);
    for (const idx of handles) {
      const at = (g.reqsOff as number) + idx * (g.reqSize as number) + (g.reqOpOff as number);
      scribble(name, at, randomBytes((g.reqSize as number) - (g.reqOpOff as number)));
    }
    start();
    await until(() => replies.length + errors.length >= 30);
    const failed = replies.filter((r) => !r.ok).length;
    expect(failed + errors.length).toBeGreaterThanOrEqual(20);
    expect(served()).toBeGreaterThanOrEqual(10);
    for (const e of errors) expect(e.code).toBe('EIO');
    void calls;
    // the segment still works
    const ok = await cli.call({ dst: 1, op: Op.READ, size: 10 });
    expect(ok.ok).toBe(true);
    seg.close();
  });

  it('random bytes over whole requests and the queue header give errors, then the port works again', async () => {
    const { name, seg, g, cli, errors, start } = await setup();
    for (let i = 0; i < 10; i++) cli.submit({ dst: 1, op: Op.READ, offset: i, size: 512 });
    for (let idx = 0; idx < 10; idx += 3)
      scribble(name, (g.reqsOff as number) + idx * (g.reqSize as number), randomBytes(g.reqSize as number));
    const queue = (g.portsOff as number) + 1 * (g.portSize as number) + (g.reqRqOff as number);
    scribble(name, queue, randomBytes(12));
    const failed: number[] = [];
    cli.onReply((r) => {
      if (!r.ok) failed.push(r.offset);
    });
    start();
    await until(() => errors.length > 0);
    expect(errors[0]?.code).toBe('EIO');
    // The intact requests cut off from the damaged queue are found by a scan and failed back.
    expect(seg.recoverPort(1, { force: true }).failed).toBe(6);
    await until(() => failed.length === 6);
    expect(failed.sort()).toEqual([1, 2, 4, 5, 7, 8]);
    expect(seg.report().requests.corrupt).toBe(4);
    const ok = await cli.call({ dst: 1, op: Op.READ, size: 10 });
    expect(ok.ok).toBe(true);
    seg.close();
  });

  it('a corrupt heap chunk behind a request is reported, not followed', async () => {
    const { name, seg, g, cli, errors, start, served } = await setup();
    const h = cli.submit({ dst: 1, op: Op.READ, size: 4096 });
    const idx = Math.floor(h / 2 ** 32);
    // the request's data_off field (after 14 u32 and 3 u64) points at its chunk: smash the chunk header
    const reqAt = (g.reqsOff as number) + idx * (g.reqSize as number);
    const raw = readFileSync(`/dev/shm/${name}`).subarray(reqAt, reqAt + (g.reqSize as number));
    const dataOff = Number(raw.readBigUInt64LE(14 * 4 + 3 * 8));
    scribble(name, (g.heapOff as number) + dataOff - 64, randomBytes(64));
    start();
    await until(() => errors.length > 0);
    expect(served()).toBe(0);
    expect(errors[0]?.message).toMatch(/corrupt/);
    seg.close();
  });
});
