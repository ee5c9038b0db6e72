import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, open, rm, stat, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ArchipelagoError } from '@archipelago/libxseg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FuseChannel } from './channel.js';
import { attachLoop, detachLoop, loopBackingFile } from './loop.js';
import { fuseMountAt } from './mount.js';
import { Errno, FOPEN_DIRECT_IO, InitFlag, Op } from './protocol.js';
import { serveFuseFile } from './serve.js';
import { type FuseFileBackend, FuseFileServer } from './server.js';

const run = promisify(execFile);

/** A file of `size` bytes in memory, counting flushes. */
class MemoryFile implements FuseFileBackend {
  readonly data: Buffer;
  flushes = 0;
  failWrites = false;
  constructor(
    readonly size: number,
    readonly readonly = false,
  ) {
    this.data = Buffer.alloc(size);
  }
  async readInto(offset: number, out: Buffer): Promise<void> {
    this.data.copy(out, 0, offset, offset + out.length);
  }
  async write(offset: number, data: Buffer): Promise<void> {
    if (this.failWrites) throw new ArchipelagoError('ENOSPC', 'pool full');
    data.copy(this.data, offset);
  }
  async flush(): Promise<void> {
    this.flushes++;
  }
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.data.fill(0, offset, offset + length);
  }
}

/** A channel the test feeds requests into, collecting the replies. */
class ScriptChannel implements FuseChannel {
  readonly replies: Buffer[] = [];
  private pending: Array<(err: NodeJS.ErrnoException | null, n: number) => void> = [];
  private bufs: Buffer[] = [];
  read(buf: Buffer, cb: (err: NodeJS.ErrnoException | null, n: number) => void): void {
    this.bufs.push(buf);
    this.pending.push(cb);
  }
  write(reply: Buffer): void {
    this.replies.push(Buffer.from(reply));
  }
  close(): void {}
  /** Delivers one request (raw bytes) to a waiting reader. */
  send(req: Buffer): void {
    const cb = this.pending.shift()!;
    const buf = this.bufs.shift()!;
    req.copy(buf);
    cb(null, req.length);
  }
  end(): void {
    for (const cb of this.pending.splice(0)) cb(Object.assign(new Error('gone'), { code: 'ENODEV' }), 0);
  }
}

let nextUnique = 1n;
function request(opcode: number, body: Buffer, unique = nextUnique++): Buffer {
  const h = Buffer.alloc(40);
  h.writeUInt32LE(40 + body.length, 0);
  h.writeUInt32LE(opcode, 4);
  h.writeBigUInt64LE(unique, 8);
  h.writeBigUInt64LE(1n, 16);
  return Buffer.concat([h, body]);
}
function initBody(minor: number, flags: number): Buffer {
  const b = Buffer.alloc(64);
  b.writeUInt32LE(7, 0);
  b.writeUInt32LE(minor, 4);
  b.writeUInt32LE(128 << 10, 8);
  b.writeUInt32LE(flags, 12);
  return b;
}
function writeBody(offset: number, data: Buffer): Buffer {
  const b = Buffer.alloc(40);
  b.writeBigUInt64LE(BigInt(offset), 8);
  b.writeUInt32LE(data.length, 16);
  return Buffer.concat([b, data]);
}
function readBody(offset: number, size: number): Buffer {
  const b = Buffer.alloc(40);
  b.writeBigUInt64LE(BigInt(offset), 8);
  b.writeUInt32LE(size, 16);
  return b;
}
function fallocBody(offset: number, length: number, mode: number): Buffer {
  const b = Buffer.alloc(32);
  b.writeBigUInt64LE(BigInt(offset), 8);
  b.writeBigUInt64LE(BigInt(length), 16);
  b.writeUInt32LE(mode, 24);
  return b;
}
const errorOf = (r: Buffer) => -r.readInt32LE(4) || 0;
/** Replies in request order (async ones are answered when done). */
const byUnique = (rs: Buffer[]) => [...rs].sort((a, b) => (uniqueOf(a) < uniqueOf(b) ? -1 : 1));
const uniqueOf = (r: Buffer) => r.readBigUInt64LE(8);

async function settle(server: FuseFileServer): Promise<void> {
  await server.drain();
  await new Promise((r) => setImmediate(r));
}

describe('FuseFileServer (protocol, scripted channel)', () => {
  function setup(file = new MemoryFile(1 << 20)) {
    const ch = new ScriptChannel();
    const server = new FuseFileServer(ch, file, { readers: 1, uid: 0, gid: 0 });
    server.start();
    return { ch, server, file };
  }

  it('negotiates INIT: protocol 7, only the flags the kernel offers, max_write and max_pages', async () => {
    const { ch } = setup();
    const offered = InitFlag.ASYNC_READ | InitFlag.ASYNC_DIO | (1 << 16); // + writeback cache, not wanted
    ch.send(request(Op.INIT, initBody(40, offered), 7n));
    const r = ch.replies[0]!;
    expect(errorOf(r)).toBe(0);
    expect(uniqueOf(r)).toBe(7n);
    expect(r.length).toBe(16 + 64);
    expect(r.readUInt32LE(16)).toBe(7);
    expect(r.readUInt32LE(20)).toBe(38); // our minor, not the kernel's newer one
    expect(r.readUInt32LE(28)).toBe(InitFlag.ASYNC_READ | InitFlag.ASYNC_DIO);
    expect(r.readUInt32LE(36)).toBe(1 << 20); // max_write
    expect(r.readUInt16LE(44)).toBe(256); // max_pages
  });

  it('refuses a kernel speaking another major or a too old minor (EPROTO)', () => {
    const { ch } = setup();
    const b = initBody(38, 0);
    b.writeUInt32LE(8, 0);
    ch.send(request(Op.INIT, b));
    expect(errorOf(ch.replies[0]!)).toBe(Errno.EPROTO);
    ch.send(request(Op.INIT, initBody(12, 0)));
    expect(errorOf(ch.replies[1]!)).toBe(Errno.EPROTO);
  });

  it('reports the file: a regular file of the volume size, rw 0600 or ro 0400', () => {
    const { ch } = setup();
    ch.send(request(Op.GETATTR, Buffer.alloc(16)));
    const r = ch.replies[0]!;
    expect(r.readBigUInt64LE(16 + 16 + 8)).toBe(1n << 20n); // attr.size
    expect(r.readUInt32LE(16 + 16 + 60)).toBe(0o100600); // attr.mode
    const ro = setup(new MemoryFile(4096, true));
    ro.ch.send(request(Op.GETATTR, Buffer.alloc(16)));
    expect(ro.ch.replies[0]!.readUInt32LE(16 + 16 + 60)).toBe(0o100400);
  });

  it('opens with direct I/O; a read-only file refuses opens for writing (EROFS)', () => {
    const { ch } = setup();
    ch.send(request(Op.OPEN, Buffer.alloc(8)));
    expect(errorOf(ch.replies[0]!)).toBe(0);
    expect(ch.replies[0]!.readUInt32LE(24) & FOPEN_DIRECT_IO).toBe(FOPEN_DIRECT_IO);
    const ro = setup(new MemoryFile(4096, true));
    const b = Buffer.alloc(8);
    b.writeUInt32LE(2, 0); // O_RDWR
    ro.ch.send(request(Op.OPEN, b));
    expect(errorOf(ro.ch.replies[0]!)).toBe(Errno.EROFS);
  });

  it('writes and reads bytes; a write past the end is cut at the end, one at the end is ENOSPC', async () => {
    const { ch, server, file } = setup();
    const data = Buffer.from('archipelago over fuse');
    ch.send(request(Op.WRITE, writeBody(1000, data), 10n));
    await settle(server);
    expect(errorOf(ch.replies[0]!)).toBe(0);
    expect(ch.replies[0]!.readUInt32LE(16)).toBe(data.length);
    expect(file.data.subarray(1000, 1000 + data.length)).toEqual(data);
    ch.send(request(Op.READ, readBody(1000, data.length), 11n));
    await settle(server);
    expect(ch.replies[1]!.subarray(16)).toEqual(data);
    ch.send(request(Op.WRITE, writeBody((1 << 20) - 4, Buffer.alloc(16, 7))));
    await settle(server);
    expect(ch.replies[2]!.readUInt32LE(16)).toBe(4);
    ch.send(request(Op.WRITE, writeBody(1 << 20, Buffer.alloc(16, 7))));
    await settle(server);
    expect(errorOf(ch.replies[3]!)).toBe(Errno.ENOSPC);
    ch.send(request(Op.READ, readBody((1 << 20) - 2, 100)));
    await settle(server);
    expect(ch.replies[4]!.length).toBe(16 + 2); // a read at the end is short
  });

  it('the write data is copied: the read buffer reused for the next request does not change it', async () => {
    const file = new MemoryFile(8192);
    const kept: Buffer[] = [];
    file.write = async (_o, d) => {
      kept.push(d);
    };
    const { ch, server } = setup(file);
    ch.send(request(Op.WRITE, writeBody(0, Buffer.alloc(512, 0xaa))));
    ch.send(request(Op.WRITE, writeBody(0, Buffer.alloc(512, 0x55)))); // same buffer, read again
    await settle(server);
    expect(kept.map((d) => [d.length, d[0], d[511]])).toEqual([
      [512, 0xaa, 0xaa],
      [512, 0x55, 0x55],
    ]);
    expect(ch.replies.every((r) => errorOf(r) === 0)).toBe(true);
  });

  it('fsync and flush flush the backend when a write completed since the last flush', async () => {
    const { ch, server, file } = setup();
    ch.send(request(Op.FSYNC, Buffer.alloc(16)));
    await settle(server);
    expect(file.flushes).toBe(0); // nothing written
    ch.send(request(Op.WRITE, writeBody(0, Buffer.alloc(4096, 1))));
    await settle(server);
    ch.send(request(Op.FSYNC, Buffer.alloc(16)));
    await settle(server);
    ch.send(request(Op.FLUSH, Buffer.alloc(24)));
    await settle(server);
    expect(file.flushes).toBe(1);
    ch.send(request(Op.WRITE, writeBody(0, Buffer.alloc(4096, 2))));
    await settle(server);
    ch.send(request(Op.FLUSH, Buffer.alloc(24)));
    await settle(server);
    expect(file.flushes).toBe(2);
    expect(ch.replies.every((r) => errorOf(r) === 0)).toBe(true);
  });

  it('backend errors become errnos: ENOSPC stays ENOSPC, a read-only file refuses writes (EROFS)', async () => {
    const { ch, server, file } = setup();
    file.failWrites = true;
    ch.send(request(Op.WRITE, writeBody(0, Buffer.alloc(512))));
    await settle(server);
    expect(errorOf(ch.replies[0]!)).toBe(Errno.ENOSPC);
    const ro = setup(new MemoryFile(4096, true));
    ro.ch.send(request(Op.WRITE, writeBody(0, Buffer.alloc(512))));
    ro.ch.send(request(Op.FALLOCATE, fallocBody(0, 512, 0x03)));
    await settle(ro.server);
    expect(ro.ch.replies.map(errorOf)).toEqual([Errno.EROFS, Errno.EROFS]);
  });

  it('fallocate: PUNCH_HOLE and ZERO_RANGE zero the range; other modes are EOPNOTSUPP', async () => {
    const { ch, server, file } = setup();
    file.data.fill(9);
    ch.send(request(Op.FALLOCATE, fallocBody(4096, 8192, 0x03))); // PUNCH_HOLE | KEEP_SIZE
    ch.send(request(Op.FALLOCATE, fallocBody(65536, 100, 0x10))); // ZERO_RANGE
    ch.send(request(Op.FALLOCATE, fallocBody(0, 4096, 0x08))); // COLLAPSE_RANGE
    ch.send(request(Op.FALLOCATE, fallocBody(0, 2 << 20, 0))); // grow: no
    await settle(server);
    expect(byUnique(ch.replies).map(errorOf)).toEqual([0, 0, Errno.EOPNOTSUPP, Errno.EFBIG]);
    expect(file.data.subarray(4096, 12288).every((b) => b === 0)).toBe(true);
    expect(file.data[4095]).toBe(9);
    expect(file.data[12288]).toBe(9);
    expect(file.data.subarray(65536, 65636).every((b) => b === 0)).toBe(true);
  });

  it('refuses to resize the file and to change its owner or mode', () => {
    const { ch } = setup();
    const b = Buffer.alloc(88);
    b.writeUInt32LE(1 << 3, 0); // FATTR_SIZE
    b.writeBigUInt64LE(0n, 16);
    ch.send(request(Op.SETATTR, b));
    const same = Buffer.alloc(88);
    same.writeUInt32LE(1 << 3, 0);
    same.writeBigUInt64LE(BigInt(1 << 20), 16);
    ch.send(request(Op.SETATTR, same));
    const chmod = Buffer.alloc(88);
    chmod.writeUInt32LE(1, 0);
    ch.send(request(Op.SETATTR, chmod));
    expect(ch.replies.map(errorOf)).toEqual([Errno.EINVAL, 0, Errno.EPERM]);
  });

  it('answers garbage with EINVAL and keeps serving: short bodies, lengths that disagree, unknown ops', async () => {
    const { ch, server } = setup();
    const bad = request(Op.READ, readBody(0, 16), 21n);
    bad.writeUInt32LE(9999, 0); // length field lies
    ch.send(bad);
    ch.send(request(Op.READ, Buffer.alloc(8), 22n)); // body too short
    const w = writeBody(0, Buffer.alloc(100));
    w.writeUInt32LE(4000, 16); // says 4000 bytes, carries 100
    ch.send(request(Op.WRITE, w, 23n));
    ch.send(request(9999, Buffer.alloc(0), 24n)); // unknown opcode
    ch.send(Buffer.alloc(10)); // not even a header: nothing to answer
    ch.send(request(Op.FORGET, Buffer.alloc(8), 25n)); // needs no reply
    ch.send(request(Op.GETATTR, Buffer.alloc(16), 26n)); // still serving
    await settle(server);
    expect(byUnique(ch.replies).map((r) => [uniqueOf(r), errorOf(r)])).toEqual([
      [21n, Errno.EINVAL],
      [22n, Errno.EINVAL],
      [23n, Errno.EINVAL],
      [24n, Errno.ENOSYS],
      [26n, 0],
    ]);
    expect(server.stats.errors).toBe(4);
  });

  it('ends when the kernel ends the connection (ENODEV)', async () => {
    const { ch, server } = setup();
    ch.end();
    await expect(server.closed).resolves.toBeUndefined();
  });
});

// The real thing: the kernel's FUSE driver, a mount on a regular file, a loop device over it.
const canMount = process.getuid?.() === 0 && existsSync('/dev/fuse');

describe.skipIf(!canMount)('serveFuseFile (kernel FUSE mount)', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'archip-fuse-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a regular file of the backend size: pwrite/pread bytes, fsync flushes, truncate refused, unmount', async () => {
    const file = new MemoryFile(8 << 20);
    const served = await serveFuseFile(join(dir, 'rw.img'), file, { readers: 2 });
    try {
      expect(fuseMountAt(served.path)?.fstype).toBe('fuse.archipelago');
      const st = await stat(served.path);
      expect(st.isFile()).toBe(true);
      expect(st.size).toBe(8 << 20);
      const fh = await open(served.path, 'r+');
      const data = Buffer.alloc(3 << 20);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
      await fh.write(data, 0, data.length, 12345);
      expect(file.data.subarray(12345, 12345 + data.length).equals(data)).toBe(true);
      const back = Buffer.alloc(data.length);
      await fh.read(back, 0, back.length, 12345);
      expect(back.equals(data)).toBe(true);
      const before = file.flushes;
      await fh.sync();
      expect(file.flushes).toBe(before + 1);
      await fh.close();
      await expect(truncate(served.path, 0)).rejects.toMatchObject({ code: 'EINVAL' });
      expect(server(served).stats.writes).toBeGreaterThan(0);
    } finally {
      expect(await served.close()).toBe(true);
    }
    expect(fuseMountAt(served.path)).toBeNull();
  });

  it('a read-only backend mounts read-only: opening for writing is EROFS', async () => {
    const file = new MemoryFile(1 << 20, true);
    file.data.write('read only bytes', 0);
    const served = await serveFuseFile(join(dir, 'ro.img'), file, { readers: 2 });
    try {
      await expect(open(served.path, 'r+')).rejects.toMatchObject({ code: 'EROFS' });
      const fh = await open(served.path, 'r');
      const b = Buffer.alloc(15);
      await fh.read(b, 0, 15, 0);
      await fh.close();
      expect(b.toString()).toBe('read only bytes');
    } finally {
      await served.close();
    }
  });

  it('a loop device over the file: the block device reads and writes the backend bytes', async () => {
    const file = new MemoryFile(4 << 20);
    const served = await serveFuseFile(join(dir, 'loop.img'), file, { readers: 2 });
    let device: string | null = null;
    try {
      const att = await attachLoop(served.path);
      device = att.device;
      expect(loopBackingFile(device)).toBe(served.path);
      // dd in a child: this process serves the requests its I/O makes.
      await run('dd', [`of=${device}`, 'if=/dev/zero', 'bs=64k', 'count=4', 'seek=1', 'oflag=direct'], {
        timeout: 10_000,
      });
      file.data.fill(0x5a, 0, 65536);
      const { stdout } = await run(
        'sh',
        ['-c', `dd if=${device} bs=64k count=1 iflag=direct status=none | od -v -An -tx1 | sort -u`],
        { timeout: 10_000 },
      );
      expect(stdout.trim()).toBe('5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a');
      await detachLoop(device);
      device = null;
    } finally {
      if (device) await detachLoop(device).catch(() => {});
      await served.close();
    }
  });
});

function server(s: { server: FuseFileServer }): FuseFileServer {
  return s.server;
}
