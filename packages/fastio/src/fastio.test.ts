import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  constants as fsConstants,
  fsyncSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  statfsSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { constants } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  addressAlignment,
  available,
  EAGAIN,
  flock,
  flockAvailable,
  largeBuffer,
  preadNowait,
  recvNowait,
  recvNowaitAvailable,
  SEND_MAX_BUFFERS,
  sendBufferAvailable,
  sendNowait,
  sendNowaitAvailable,
  setNowaitForTests,
  setSendBuffer,
} from './index.js';

// A real disk (page-cache eviction does nothing on tmpfs, where /tmp may live).
const root = mkdtempSync(join('/var/tmp', 'archip-fastio-test-'));
const fds: number[] = [];
afterAll(() => {
  for (const fd of fds) closeSync(fd);
  rmSync(root, { recursive: true, force: true });
});
afterEach(() => setNowaitForTests(true));

function file(name: string, data: Buffer): { fd: number; path: string } {
  const path = join(root, name);
  writeFileSync(path, data);
  const fd = openSync(path, 'r+');
  fds.push(fd);
  return { fd, path };
}

/** Drops the file's clean pages from the page cache (POSIX_FADV_DONTNEED through dd). */
function evict(fd: number, path: string): void {
  fsyncSync(fd); // dirty pages are not dropped
  const r = spawnSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
  if (r.status !== 0) throw new Error(`dd failed: ${r.stderr}`);
}

const TMPFS_MAGIC = 0x01021994;
const onTmpfs = Number(statfsSync(root).type) === TMPFS_MAGIC;
/** ARCHIP_FASTIO=0 switches the addon off on purpose (A/B runs): then only the fallback is tested. */
const wanted = process.platform === 'linux' && process.env.ARCHIP_FASTIO !== '0';

describe.runIf(wanted)('preadNowait (Linux, addon built)', () => {
  it('loads the addon on Linux', () => {
    // The package build compiles it; a missing addon is a build problem worth failing on here.
    expect(available()).toBe(true);
    expect(sendBufferAvailable).toBe(true);
  });

  it('reads cached data synchronously, at any offset into the buffer', () => {
    const data = randomBytes(3 * 4096 + 123);
    const { fd } = file('cached', data);
    const buf = Buffer.alloc(data.length + 10, 0xee);
    expect(preadNowait(fd, buf, 10, data.length, 0)).toBe(data.length);
    expect(buf.subarray(10).equals(data)).toBe(true);
    expect(buf.subarray(0, 10).every((b) => b === 0xee)).toBe(true);
    const part = Buffer.alloc(100);
    expect(preadNowait(fd, part, 0, 100, 5000)).toBe(100);
    expect(part.equals(data.subarray(5000, 5100))).toBe(true);
  });

  it('returns a short count at the end of file and 0 past it', () => {
    const data = randomBytes(1000);
    const { fd } = file('short', data);
    const buf = Buffer.alloc(4096);
    expect(preadNowait(fd, buf, 0, 4096, 900)).toBe(100);
    expect(buf.subarray(0, 100).equals(data.subarray(900))).toBe(true);
    expect(preadNowait(fd, buf, 0, 4096, 1000)).toBe(0);
    expect(preadNowait(fd, buf, 0, 4096, 1 << 30)).toBe(0);
    expect(preadNowait(fd, buf, 0, 0, 0)).toBe(0);
  });

  it.skipIf(onTmpfs)('returns EAGAIN for data not in the page cache, without blocking', () => {
    const data = randomBytes(1 << 20);
    const { fd, path } = file('evicted', data);
    evict(fd, path);
    const buf = Buffer.alloc(4096);
    expect(preadNowait(fd, buf, 0, 4096, 512 * 1024)).toBe(EAGAIN);
    expect(EAGAIN).toBeLessThan(0);
  });

  it('gives a system error for a bad fd, never a crash', () => {
    const buf = Buffer.alloc(16);
    expect(() => preadNowait(1 << 30, buf, 0, 16, 0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    const { fd } = file('closed', randomBytes(16));
    const wfd = openSync(join(root, 'closed'), 'r');
    closeSync(wfd);
    expect(() => preadNowait(wfd, buf, 0, 16, 0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(preadNowait(fd, buf, 0, 16, 0)).toBe(16);
  });

  it('switches itself off when RWF_NOWAIT is refused (EOPNOTSUPP), answering EAGAIN', () => {
    // A directory fd refuses RWF_NOWAIT like a kernel or file system without it would.
    const dfd = openSync(root, 'r');
    fds.push(dfd);
    const buf = Buffer.alloc(16);
    expect(preadNowait(dfd, buf, 0, 16, 0)).toBe(EAGAIN);
    expect(available()).toBe(false);
    const { fd } = file('after-off', randomBytes(16));
    expect(preadNowait(fd, buf, 0, 16, 0)).toBe(EAGAIN);
  });

  it('refuses arguments outside the buffer or of the wrong type', () => {
    const { fd } = file('args', randomBytes(64));
    const buf = Buffer.alloc(16);
    expect(() => preadNowait(fd, buf, 0, 17, 0)).toThrow(RangeError);
    expect(() => preadNowait(fd, buf, 10, 7, 0)).toThrow(RangeError);
    expect(() => preadNowait(fd, buf, 17, 0, 0)).toThrow(RangeError);
    expect(() => preadNowait(fd, buf, -1, 1, 0)).toThrow(RangeError);
    expect(() => preadNowait(fd, buf, 0, 1, -1)).toThrow(RangeError);
    expect(() => preadNowait(fd, buf, 0.5, 1, 0)).toThrow(RangeError);
    expect(() => preadNowait(-1, buf, 0, 1, 0)).toThrow(RangeError);
    expect(() => preadNowait(fd, 'x' as unknown as Buffer, 0, 1, 0)).toThrow(TypeError);
    expect(() => preadNowait(fd, new Uint16Array(8) as unknown as Buffer, 0, 1, 0)).toThrow(TypeError);
    // A Uint8Array view into a larger ArrayBuffer: bounds are the view's.
    const view = new Uint8Array(new ArrayBuffer(64), 8, 8);
    expect(preadNowait(fd, view, 0, 8, 0)).toBe(8);
    expect(() => preadNowait(fd, view, 0, 9, 0)).toThrow(RangeError);
  });

  it('answers EAGAIN when the fast path is off (the caller falls back)', () => {
    const { fd } = file('off', randomBytes(64));
    setNowaitForTests(false);
    expect(available()).toBe(false);
    expect(preadNowait(fd, Buffer.alloc(8), 0, 8, 0)).toBe(EAGAIN);
    setNowaitForTests(true);
    expect(preadNowait(fd, Buffer.alloc(8), 0, 8, 0)).toBe(8);
  });
});

describe.skipIf(wanted)('without the addon (not Linux, or ARCHIP_FASTIO=0)', () => {
  it.runIf(process.platform === 'linux')('still locks with ARCHIP_FASTIO=0: flock has no plain path', () => {
    const { fd } = file('fastio-off-flock', Buffer.alloc(0));
    expect(flockAvailable).toBe(true);
    expect(flock(fd, 'ex')).toBe(true);
    expect(flock(fd, 'un')).toBe(true);
  });

  it('answers EAGAIN and undefined, so callers take their plain paths', () => {
    const { fd } = file('fallback', randomBytes(64));
    expect(available()).toBe(false);
    expect(preadNowait(fd, Buffer.alloc(8), 0, 8, 0)).toBe(EAGAIN);
    expect(setSendBuffer(fd, 65536)).toBeUndefined();
    expect(sendNowaitAvailable).toBe(false);
    expect(recvNowaitAvailable).toBe(false);
    expect(sendNowait(fd, [Buffer.alloc(1)])).toBe(EAGAIN);
    expect(recvNowait(fd, Buffer.alloc(8), 0, 8)).toBe(EAGAIN);
    const b = largeBuffer(4096);
    expect(b.length).toBe(4096);
    expect(addressAlignment(b)).toBe(0);
  });
});

describe.runIf(wanted)('setSendBuffer', () => {
  let server: Server | undefined;
  afterAll(() => server?.close());

  it('sets SO_SNDBUF on a connected socket and reports the effective size', async () => {
    const accepted = new Promise<Socket>((resolve) => {
      server = createServer(resolve);
    });
    await new Promise<void>((r) => server?.listen(0, '127.0.0.1', r));
    const addr = server?.address();
    if (addr === null || typeof addr !== 'object' || addr === undefined) throw new Error('no address');
    const client = connect(addr.port, '127.0.0.1');
    const sock = await accepted;
    try {
      const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
      expect(typeof fd).toBe('number');
      const got = setSendBuffer(fd as number, 64 * 1024);
      // Linux doubles the value for its bookkeeping.
      expect(got).toBe(128 * 1024);
    } finally {
      client.destroy();
      sock.destroy();
    }
  });

  it('gives a system error for something that is not a socket', () => {
    const { fd } = file('notsock', Buffer.alloc(1));
    expect(() => setSendBuffer(fd, 65536)).toThrow(expect.objectContaining({ code: 'ENOTSOCK' }));
    expect(() => setSendBuffer(1 << 30, 65536)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });
});

describe.runIf(wanted)('largeBuffer and addressAlignment', () => {
  it('gives a 2 MiB-aligned, writable buffer of the size asked, usable for O_DIRECT as is', () => {
    const b = largeBuffer(4 * 1024 * 1024 + 100);
    expect(b.length).toBe(4 * 1024 * 1024 + 100);
    expect(addressAlignment(b)).toBeGreaterThanOrEqual(1 << 20);
    b.fill(7);
    expect(b[0]).toBe(7);
    expect(b[b.length - 1]).toBe(7);
    // A page-aligned buffer goes to O_DIRECT without a bounce copy: the kernel accepts it.
    const path = join(root, 'direct');
    const fd = openSync(path, fsConstants.O_CREAT | fsConstants.O_RDWR | fsConstants.O_DIRECT);
    try {
      const chunk = b.subarray(0, 1 << 20);
      chunk.fill(3);
      expect(writeSync(fd, chunk, 0, chunk.length, 0)).toBe(chunk.length);
      const back = largeBuffer(1 << 20);
      expect(readSync(fd, back, 0, back.length, 0)).toBe(back.length);
      expect(back.equals(chunk)).toBe(true);
    } finally {
      closeSync(fd);
    }
  });

  it('measures the alignment of any view, and says 0 for a detached buffer', () => {
    const b = largeBuffer(8192);
    expect(addressAlignment(b.subarray(4096))).toBe(4096);
    expect(addressAlignment(b.subarray(512))).toBe(512);
    expect(addressAlignment(b.subarray(1))).toBe(1);
    const ab = new ArrayBuffer(16);
    const view = new Uint8Array(ab);
    structuredClone(ab, { transfer: [ab] });
    expect(addressAlignment(view)).toBe(0);
  });

  it('refuses sizes outside 1 byte .. 1 GiB, and many buffers come and go', () => {
    expect(() => largeBuffer(0)).toThrow(RangeError);
    expect(() => largeBuffer(2 ** 31)).toThrow(RangeError);
    expect(() => largeBuffer(1.5)).toThrow(RangeError);
    // Each is its own mapping, unmapped by the garbage collector: allocating far more than
    // fits at once must not run out of address space or memory.
    for (let i = 0; i < 64; i++) largeBuffer(64 * 1024 * 1024)[0] = i;
  });
});

/** Whether util-linux `flock -n` gets the lock of `path` now (another process's view). */
function otherProcessCanLock(path: string, mode: '-x' | '-s' = '-x'): boolean {
  const r = spawnSync('flock', [mode, '-n', '-E', '99', path, 'true']);
  if (r.status !== 0 && r.status !== 99) throw new Error(`flock(1) failed: ${r.stderr}`);
  return r.status === 0;
}
const haveFlockTool = spawnSync('flock', ['--version']).status === 0;

describe.runIf(process.platform === 'linux')('flock', () => {
  it('is there on Linux whatever ARCHIP_FASTIO says', () => {
    expect(flockAvailable).toBe(true);
  });

  it('conflicts between two open() of one file, even in one process, and never waits', () => {
    const { fd: a, path } = file('lock-two-opens', Buffer.alloc(0));
    const b = openSync(path, 'r');
    fds.push(b);
    expect(flock(a, 'ex')).toBe(true);
    const t0 = process.hrtime.bigint();
    expect(flock(b, 'ex')).toBe(false);
    expect(flock(b, 'sh')).toBe(false);
    expect(Number(process.hrtime.bigint() - t0) / 1e6).toBeLessThan(50);
    // Again on the same fd: the same open file description, so it already holds it.
    expect(flock(a, 'ex')).toBe(true);
    expect(flock(a, 'un')).toBe(true);
    expect(flock(b, 'ex')).toBe(true);
    expect(flock(a, 'ex')).toBe(false);
    expect(flock(b, 'un')).toBe(true);
  });

  it('shares LOCK_SH between holders and excludes LOCK_EX from them', () => {
    const { fd: a, path } = file('lock-shared', Buffer.alloc(0));
    const b = openSync(path, 'r');
    fds.push(b);
    expect(flock(a, 'sh')).toBe(true);
    expect(flock(b, 'sh')).toBe(true);
    expect(flock(b, 'ex')).toBe(false);
    expect(flock(a, 'un')).toBe(true);
    // Alone now: a shared lock converts to an exclusive one.
    expect(flock(b, 'ex')).toBe(true);
    expect(flock(b, 'un')).toBe(true);
  });

  it.runIf(haveFlockTool)('is seen by other processes, and closing the fd releases it', () => {
    const path = join(root, 'lock-close');
    writeFileSync(path, '');
    const fd = openSync(path, 'r');
    expect(otherProcessCanLock(path)).toBe(true);
    expect(flock(fd, 'ex')).toBe(true);
    expect(otherProcessCanLock(path)).toBe(false);
    expect(otherProcessCanLock(path, '-s')).toBe(false);
    closeSync(fd);
    expect(otherProcessCanLock(path)).toBe(true);
  });

  it('gives a system error for a bad fd and a RangeError for a bad op', () => {
    expect(() => flock(1 << 30, 'ex')).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'flock' }));
    const { fd } = file('lock-args', Buffer.alloc(0));
    expect(() => flock(fd, 'x' as 'ex')).toThrow(RangeError);
    expect(() => flock(-1, 'ex')).toThrow(RangeError);
  });
});

describe.runIf(wanted)('sendNowait and recvNowait on a unix socket', () => {
  /** A connected pair: `server` is accepted paused (libuv does not read it), `client` as usual. */
  async function pair(): Promise<{ srv: Socket; cli: Socket; fd: number; close: () => void }> {
    const path = join(root, `s${Math.random().toString(16).slice(2)}.sock`);
    let server!: Server;
    const accepted = new Promise<Socket>((resolve) => {
      server = createServer({ pauseOnConnect: true }, resolve);
    });
    await new Promise<void>((r) => server.listen(path, r));
    const cli = connect(path);
    const srv = await accepted;
    await new Promise<void>((r) => (cli.connecting ? cli.once('connect', () => r()) : r()));
    const fd = (srv as unknown as { _handle?: { fd?: number } })._handle?.fd as number;
    return {
      srv,
      cli,
      fd,
      close: () => {
        cli.destroy();
        srv.destroy();
        server.close();
      },
    };
  }
  /** Runs `fn` on a fresh pair and closes it afterwards. */
  async function withPair(fn: (p: Awaited<ReturnType<typeof pair>>) => Promise<void>): Promise<void> {
    const p = await pair();
    try {
      await fn(p);
    } finally {
      p.close();
    }
  }
  const received = (s: Socket, n: number): Promise<Buffer> =>
    new Promise((resolve) => {
      const parts: Buffer[] = [];
      let got = 0;
      s.on('data', (d: Buffer) => {
        parts.push(d);
        got += d.length;
        if (got >= n) resolve(Buffer.concat(parts));
      });
    });

  it('are available with the addon', () => {
    expect(sendNowaitAvailable).toBe(true);
    expect(recvNowaitAvailable).toBe(true);
    expect(SEND_MAX_BUFFERS).toBe(64);
  });

  it('sendNowait sends several buffers in order in one call', async () => {
    await withPair(async (p) => {
      const bufs = [Buffer.from('head'), randomBytes(5000), Buffer.alloc(0), Buffer.from('tail')];
      const want = Buffer.concat(bufs);
      const got = received(p.cli, want.length);
      expect(sendNowait(p.fd, bufs)).toBe(want.length);
      expect((await got).equals(want)).toBe(true);
    });
  });

  it('sendNowait takes what fits, then EAGAIN, never blocking; the rest arrives once read', async () => {
    await withPair(async (p) => {
      p.cli.pause();
      const chunk = randomBytes(256 * 1024);
      let sent = 0;
      let n = 0;
      let short = false;
      for (let i = 0; i < 1000; i++) {
        n = sendNowait(p.fd, [chunk]);
        if (n < 0) break;
        if (n < chunk.length) short = true;
        sent += n;
      }
      expect(n).toBe(EAGAIN);
      expect(short || sent % chunk.length === 0).toBe(true);
      const got = received(p.cli, sent);
      p.cli.resume();
      const all = await got;
      expect(all.length).toBe(sent);
      // Every byte is the chunk's, in order (the buffer was sent again and again, partly at the end).
      for (let at = 0; at < sent; at += chunk.length) {
        const part = all.subarray(at, Math.min(sent, at + chunk.length));
        expect(part.equals(chunk.subarray(0, part.length))).toBe(true);
      }
    });
  });

  it('recvNowait reads what is there at an offset into the buffer, EAGAIN when nothing, 0 at the end', async () => {
    await withPair(async (p) => {
      const buf = Buffer.alloc(64);
      expect(recvNowait(p.fd, buf, 0, 64)).toBe(EAGAIN);
      const data = randomBytes(40);
      await new Promise<void>((r) => p.cli.write(data, () => r()));
      let got = 0;
      for (let i = 0; i < 100 && got < 40; i++) {
        const n = recvNowait(p.fd, buf, 10 + got, 40 - got);
        if (n > 0) got += n;
        else await new Promise((r) => setTimeout(r, 5));
      }
      expect(got).toBe(40);
      expect(buf.subarray(10, 50).equals(data)).toBe(true);
      expect(buf.subarray(0, 10).equals(Buffer.alloc(10))).toBe(true);
      expect(recvNowait(p.fd, buf, 0, 0)).toBe(0);
      p.cli.end();
      let n = EAGAIN;
      for (let i = 0; i < 100 && n === EAGAIN; i++) {
        n = recvNowait(p.fd, buf, 0, 8);
        if (n === EAGAIN) await new Promise((r) => setTimeout(r, 5));
      }
      expect(n).toBe(0);
    });
  });

  it('give a negative errno, not an exception or SIGPIPE, on a closed peer or a bad fd', async () => {
    await withPair(async (p) => {
      p.cli.destroy();
      await new Promise((r) => setTimeout(r, 20));
      let n = 0;
      for (let i = 0; i < 3 && n >= 0; i++) n = sendNowait(p.fd, [Buffer.alloc(1024)]);
      expect([-constants.errno.EPIPE, -constants.errno.ECONNRESET]).toContain(n);
      expect(sendNowait(1 << 30, [Buffer.alloc(1)])).toBe(-constants.errno.EBADF);
      expect(recvNowait(1 << 30, Buffer.alloc(1), 0, 1)).toBe(-constants.errno.EBADF);
      const { fd } = file('notsock2', Buffer.alloc(1));
      expect(sendNowait(fd, [Buffer.alloc(1)])).toBe(-constants.errno.ENOTSOCK);
    });
  });

  it('refuse arguments of the wrong type or outside the buffer', () => {
    expect(() => sendNowait(0, 'x' as unknown as Buffer[])).toThrow(TypeError);
    expect(() => sendNowait(0, [new Uint16Array(2) as unknown as Buffer])).toThrow(TypeError);
    expect(() =>
      sendNowait(
        0,
        Array.from({ length: 65 }, () => Buffer.alloc(1)),
      ),
    ).toThrow(RangeError);
    expect(() => sendNowait(-1, [])).toThrow(RangeError);
    const buf = Buffer.alloc(8);
    expect(() => recvNowait(0, buf, 0, 9)).toThrow(RangeError);
    expect(() => recvNowait(0, buf, 9, 0)).toThrow(RangeError);
    expect(() => recvNowait(0, 'x' as unknown as Buffer, 0, 1)).toThrow(TypeError);
  });
});
