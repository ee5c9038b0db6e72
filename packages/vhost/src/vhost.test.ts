/**
 * The addon and its wrapper against a front-end that plays qemu's part (test/frontend.py: guest
 * memory in a memfd, eventfds, hand-built split virtqueues), so that it can also send what qemu
 * never would. The back-end is a plain in-memory disk; what the front-end reads and writes is
 * checked on both sides. qemu itself is test-e2e/vhost/'s.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { available, type VhostBlkBackend, VhostUserBlkServer } from './index.js';

const FRONTEND = fileURLToPath(new URL('../test/frontend.py', import.meta.url));
const SIZE = 16 << 20;

const PYTHON = ['/usr/bin/python3', '/usr/local/bin/python3'].find((p) => existsSync(p));

/** An in-memory disk with a log of the calls. */
function memoryDisk(size: number) {
  const disk = Buffer.alloc(size);
  const calls: string[] = [];
  const backend: VhostBlkBackend = {
    readInto: async (off, out) => {
      calls.push(`read ${off} ${out.length}`);
      disk.copy(out, 0, off, off + out.length);
    },
    write: async (off, data) => {
      calls.push(`write ${off} ${data.length}`);
      disk.set(data, off);
    },
    flush: async () => {
      calls.push('flush');
    },
    trim: async (off, len) => {
      calls.push(`trim ${off} ${len}`);
      disk.fill(0, off, off + len);
    },
    writeZeroes: async (off, len, o) => {
      calls.push(`zero ${off} ${len} ${o.noHole ? 'nohole' : 'hole'}`);
      disk.fill(0, off, off + len);
    },
  };
  return { disk, calls, backend };
}

/** Runs one scenario of the front-end against `socket`: its JSON observations. */
function frontend(socket: string, scenario: string, arg?: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    execFile(
      PYTHON!,
      [FRONTEND, socket, scenario, ...(arg ? [arg] : [])],
      { timeout: 60_000 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`frontend.py ${scenario}: ${err.message}\n${stderr}`));
        else resolve(JSON.parse(stdout) as Record<string, unknown>);
      },
    );
  });
}

const why = !available() ? 'the addon is not built' : !PYTHON ? 'no python3' : null;
const suite = why ? describe.skip : describe;

suite(why ? `vhost-user-blk back-end (skipped: ${why})` : 'vhost-user-blk back-end', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'archip-vhost-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function serve(name: string, readonly: boolean, queues = 1) {
    const m = memoryDisk(SIZE);
    const server = new VhostUserBlkServer({
      path: join(dir, `${name}.sock`),
      size: SIZE,
      readonly,
      queues,
      serial: 'vol-serial-1',
      discardAlignment: 4 << 20,
      backend: m.backend,
    });
    await server.listen();
    return { ...m, server, socket: join(dir, `${name}.sock`) };
  }

  async function withServer(
    name: string,
    readonly: boolean,
    ...rest:
      | [number, (s: Awaited<ReturnType<typeof serve>>) => Promise<void>]
      | [(s: Awaited<ReturnType<typeof serve>>) => Promise<void>]
  ): Promise<void> {
    const [queues, fn] = rest.length === 2 ? rest : [1, rest[0]];
    const s = await serve(name, readonly, queues);
    try {
      await fn(s);
    } finally {
      await s.server.close();
    }
  }

  it('negotiates, serves IN/OUT/FLUSH/GET_ID/WRITE_ZEROES/DISCARD on two queues and indirect chains', async () => {
    await withServer('basic', false, 2, async (s) => {
      const o = await frontend(s.socket, 'basic');
      const f = BigInt(o.features as number);
      expect(f & (1n << 32n), 'VIRTIO_F_VERSION_1').toBeTruthy();
      expect(f & (1n << 5n), 'not read-only').toBe(0n);
      for (const bit of [9n, 12n, 13n, 14n, 28n, 30n])
        expect(f & (1n << bit), `feature bit ${bit}`).toBeTruthy();
      expect(o).toMatchObject({
        queueNum: 2,
        capacity: SIZE / 512,
        blkSize: 512,
        numQueues: 2,
        discardAlignment: 8192,
        memTableAck: 0,
        write: [0, 1],
        read: [0, 8193, true],
        scatterWrite: 0,
        scatterRead: [0, 16385, true],
        called: true,
        id: [0, 'vol-serial-1'],
        flush: 0,
        q1write: 0,
        q1read: true,
        writeZeroes: 0,
        zeroed: true,
        discard: 0,
        indirect: [0, 4097],
        unsupported: 2,
        beyondEnd: 1,
        partialSector: 1,
      });
      // What reached the disk: the 8 KiB write the guest gave in two adjacent pieces, as one call;
      // the 16 KiB in four scattered pieces, as one call too (through a bounce buffer).
      expect(s.calls).toContain('write 4096 8192');
      expect(s.calls).toContain('write 102400 16384');
      expect(s.calls).toContain('read 102400 16384');
      const sha = createHash('sha256')
        .update(s.disk.subarray(102400, 102400 + 16384))
        .digest('hex');
      expect(sha, 'the scattered write landed whole').toBe(o.scatterSha);
      expect(s.calls).toContain('flush');
      expect(s.calls).toContain('zero 4096 4096 hole');
      expect(s.calls).toContain('trim 51200 4096');
      expect(s.disk.subarray(4096, 8192).every((b) => b === 0)).toBe(true);
      expect(s.server.stats()).toMatchObject({ connections: 1, inflight: 0 });
      // The front-end kicked for its requests and was notified of their completions.
      const st = s.server.stats();
      expect(st.kicks).toBeGreaterThan(0);
      expect(st.kicks).toBeLessThanOrEqual(st.requests);
      expect(st.notifications).toBeGreaterThan(0);
    });
  });

  it('answers garbage descriptors with an error status or an empty used entry, and keeps serving', async () => {
    await withServer('garbage', false, async (s) => {
      const o = await frontend(s.socket, 'garbage', '11');
      // The status byte reachable: VIRTIO_BLK_S_IOERR in it, used length 1.
      expect(o.outside).toEqual([1, 1]);
      expect(o.huge).toEqual([1, 1]);
      // A loop or an index out of range: nothing written into guest memory (0xff stays), used
      // length 0; a head out of range comes back as it was given.
      expect(o.loop).toEqual([0xff, 0, 0]);
      expect(o['next-out-of-range']).toEqual([0xff, 0, 0]);
      expect(o.head).toEqual([0xff, 0, 16 + 3]);
      expect(o.randomRounds).toBe(60);
      expect(o).toMatchObject({ afterWrite: 0, afterRead: true });
      expect(s.server.stats().badRequests).toBeGreaterThan(5);
    });
  });

  it('read-only: writes, write-zeroes and discards get VIRTIO_BLK_S_IOERR; the device says VIRTIO_BLK_F_RO', async () => {
    await withServer('ro', true, async (s) => {
      const o = await frontend(s.socket, 'readonly');
      expect(BigInt(o.features as number) & (1n << 5n)).toBeTruthy();
      expect(o).toMatchObject({ write: 1, writeZeroes: 1, discard: 1, read: 0 });
      expect(s.calls.filter((c) => !c.startsWith('read'))).toEqual([]);
    });
  });

  it('a front-end that reconnects goes on; GET_VRING_BASE answers the next avail index', async () => {
    await withServer('reconnect', false, async (s) => {
      const o = await frontend(s.socket, 'reconnect');
      expect(o).toMatchObject({ write: 0, read: 0, same: true, vringBase: [0, 1] });
      expect(s.server.stats().connections).toBe(2);
    });
  });
});
