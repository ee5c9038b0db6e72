/**
 * Interoperability with real NBD clients: libnbd (nbdinfo, nbdcopy, nbdsh), qemu (qemu-img,
 * qemu-io), fio's nbd engine, and the kernel client when /dev/nbd0 exists. A missing client binary
 * fails the test with the package to install; only the kernel test skips.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { memoryExports, run, runOk, serveDuringSuite } from './__fixtures__/harness.js';
import { FileExport, MemoryExport } from './exports.js';
import { NbdServer } from './server.js';

const MiB = 1024 * 1024;

describe('real NBD clients', () => {
  const { mem, map, qmap, conv, copy, fio, ro, al, nofast } = memoryExports({
    mem: { size: 64 * MiB, description: 'scratch disk' },
    map: { size: 4 * MiB },
    qmap: { size: 4 * MiB },
    conv: { size: 8 * MiB },
    copy: { size: 8 * MiB },
    fio: { size: 8 * MiB },
    ro: { size: 1 * MiB, readonly: true },
    al: { size: 1 * MiB, minBlockSize: 512 },
    nofast: { size: 1 * MiB, fastZero: false },
  });
  const fx = serveDuringSuite([mem, map, qmap, conv, copy, fio, ro, al, nofast], { noErrorLogs: true });

  it('nbdinfo --json reports size, flags, block sizes and base:allocation', async () => {
    const r = await runOk('nbdinfo', ['--json', fx.uri('mem')]);
    const j = JSON.parse(r.stdout);
    expect(j.protocol).toBe('newstyle-fixed');
    expect(j.structured).toBe(true);
    const e = j.exports[0];
    expect(e['export-name']).toBe('mem');
    expect(e.description).toBe('scratch disk');
    expect(e['export-size']).toBe(64 * MiB);
    expect(e.contexts).toContain('base:allocation');
    for (const f of [
      'can_multi_conn',
      'can_flush',
      'can_fua',
      'can_trim',
      'can_zero',
      'can_cache',
      'can_df',
    ]) {
      expect(e[f], f).toBe(true);
    }
    expect(e.can_fast_zero).toBe(true);
    expect(e.is_read_only).toBe(false);
    expect(e.block_size_minimum).toBe(1);
    expect(e.block_size_preferred).toBe(4096);
    expect(e.block_size_maximum).toBe(32 * MiB);

    const a = JSON.parse((await runOk('nbdinfo', ['--json', fx.uri('al')])).stdout).exports[0];
    expect(a.block_size_minimum).toBe(512);
    const o = JSON.parse((await runOk('nbdinfo', ['--json', fx.uri('ro')])).stdout).exports[0];
    expect(o.is_read_only).toBe(true);
  });

  it('nbdinfo --list lists every export', async () => {
    const r = await runOk('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${fx.sock}`]);
    const names = JSON.parse(r.stdout).exports.map((e: { 'export-name': string }) => e['export-name']);
    expect(names.sort()).toEqual(['al', 'conv', 'copy', 'fio', 'map', 'mem', 'nofast', 'qmap', 'ro']);
  });

  it('nbdinfo --map shows holes, then data where qemu-io wrote', async () => {
    const before = await runOk('nbdinfo', ['--map', fx.uri('map')]);
    expect(before.stdout.trim().split('\n')).toEqual([
      expect.stringMatching(/^\s*0\s+4194304\s+3\s+hole,zero$/),
    ]);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 64k', fx.uri('map')]);
    const after = (await runOk('nbdinfo', ['--map', fx.uri('map')])).stdout.trim().split('\n');
    const rows = after.map((l) => l.trim().split(/\s+/));
    expect(rows).toEqual([
      ['0', String(MiB), '3', 'hole,zero'],
      [String(MiB), '65536', '0', 'data'],
      [String(MiB + 65536), String(3 * MiB - 65536), '3', 'hole,zero'],
    ]);
  });

  it('qemu-img info sees the export', async () => {
    const r = await runOk('qemu-img', ['info', '--output=json', fx.uri('mem')]);
    const j = JSON.parse(r.stdout);
    expect(j['virtual-size']).toBe(64 * MiB);
    expect(j.format).toBe('raw');
  });

  it('qemu-io writes a pattern and reads it back', async () => {
    const r = await runOk('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write -P 0xab 0 1M',
      '-c',
      'read -P 0xab 0 1M',
      '-c',
      'write -z 2M 1M',
      '-c',
      'read -P 0 2M 1M',
      '-c',
      'flush',
      fx.uri('mem'),
    ]);
    expect(r.stdout).toContain('wrote 1048576/1048576 bytes at offset 0');
    expect(r.stdout).toContain('read 1048576/1048576 bytes at offset 0');
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
    expect(mem.peek(0, MiB).every((b) => b === 0xab)).toBe(true);
  });

  it('qemu-img map --output=json reports zero holes', async () => {
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 1 128k 128k', fx.uri('qmap')]);
    const r = await runOk('qemu-img', ['map', '--output=json', fx.uri('qmap')]);
    const m = JSON.parse(r.stdout) as Array<{ start: number; length: number; zero: boolean; data: boolean }>;
    expect(m.map(({ start, length, zero, data }) => ({ start, length, zero, data }))).toEqual([
      { start: 0, length: 128 * 1024, zero: true, data: false },
      { start: 128 * 1024, length: 128 * 1024, zero: false, data: true },
      { start: 256 * 1024, length: 4 * MiB - 256 * 1024, zero: true, data: false },
    ]);
  });

  async function sourceImage(name: string): Promise<{ path: string; data: Buffer }> {
    const data = Buffer.alloc(8 * MiB);
    randomBytes(3 * MiB).copy(data, 0);
    randomBytes(MiB / 2).copy(data, 6 * MiB);
    const path = join(fx.dir, name);
    await writeFile(path, data);
    return { path, data };
  }

  it('qemu-img convert copies in and out byte-exact', async () => {
    const src = await sourceImage('convert-src.img');
    await runOk('qemu-img', [
      'convert',
      '-n',
      '-f',
      'raw',
      '-O',
      'raw',
      '-m',
      '8',
      '-W',
      src.path,
      fx.uri('conv'),
    ]);
    expect(conv.peek(0, 8 * MiB).equals(src.data)).toBe(true);
    const out = join(fx.dir, 'convert-out.img');
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', fx.uri('conv'), out]);
    expect((await readFile(out)).equals(src.data)).toBe(true);
  });

  it('nbdcopy --connections 4 round-trips over multi-conn', async () => {
    const src = await sourceImage('copy-src.img');
    const before = fx.logs.filter((l) => l.msg === 'nbd: connection').length;
    await runOk('nbdcopy', ['--connections', '4', '--threads', '4', '--flush', src.path, fx.uri('copy')]);
    const opened = fx.logs.filter((l) => l.msg === 'nbd: connection').length - before;
    expect(opened).toBeGreaterThanOrEqual(4);
    expect(copy.peek(0, 8 * MiB).equals(src.data)).toBe(true);
    const out = join(fx.dir, 'copy-out.img');
    await writeFile(out, '');
    await runOk('nbdcopy', ['--connections', '4', '--threads', '4', fx.uri('copy'), out]);
    expect((await readFile(out)).equals(src.data)).toBe(true);
  });

  it('fio verify job (ioengine=nbd, randwrite, crc32c) passes', async () => {
    const r = await runOk(
      'fio',
      [
        '--name=verify',
        '--ioengine=nbd',
        `--uri=${fx.uri('fio')}`,
        '--rw=randwrite',
        '--bs=4k',
        '--size=4M',
        '--iodepth=16',
        '--verify=crc32c',
        '--do_verify=1',
        '--verify_fatal=1',
        '--output-format=json',
      ],
      { cwd: fx.dir, timeoutMs: 60_000 },
    );
    const j = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')));
    expect(j.jobs[0].error).toBe(0);
    expect(j.jobs[0].write.io_bytes).toBe(4 * MiB);
    expect(j.jobs[0].read.io_bytes).toBe(4 * MiB); // the verify pass
  });

  it('nbdsh strict-mode negative tests get EINVAL/ENOSPC/EOVERFLOW, zero-size requests succeed', async () => {
    const script = `
import json
res = {}
def t(name, f):
    try:
        r = f()
        res[name] = 'ok:%d' % len(r) if isinstance(r, (bytes, bytearray)) else 'ok'
    except nbd.Error as e:
        res[name] = str(e.errno)
h.set_strict_mode(0)
h.add_meta_context('base:allocation')
h.connect_uri(${JSON.stringify(fx.uri('al'))})
size = h.get_size()
t('oob_read', lambda: h.pread(512, size))
t('oob_read_huge', lambda: h.pread(512, 2**62))
t('oob_trim', lambda: h.trim(512, size))
t('oob_cache', lambda: h.cache(512, size))
t('oob_block_status', lambda: h.block_status(512, size, lambda *a: 0))
t('oob_write', lambda: h.pwrite(b'x' * 512, size))
t('oob_zero', lambda: h.zero(512, size))
t('unaligned_offset', lambda: h.pread(512, 100))
t('unaligned_length', lambda: h.pread(100, 0))
t('unaligned_write', lambda: h.pwrite(b'y' * 100, 0))
t('unknown_flag', lambda: h.pread(512, 0, flags=0x100))
t('flag_wrong_command', lambda: h.pread(512, 0, flags=nbd.CMD_FLAG_REQ_ONE))
t('zero_pread', lambda: h.pread(0, 0))
t('zero_pwrite', lambda: h.pwrite(b'', 0))
t('zero_trim', lambda: h.trim(0, 0))
t('zero_zero', lambda: h.zero(0, 0))
t('zero_cache', lambda: h.cache(0, 0))
t('oversize_read', lambda: h.pread(64 * 1024 * 1024, 0))
t('oversize_write', lambda: h.pwrite(bytearray(33 * 1024 * 1024), 0))
h.pwrite(b'z' * 4096, 4096)
t('still_works', lambda: h.pread(4096, 4096))
res['still_works_data'] = h.pread(4096, 4096) == b'z' * 4096
h2 = nbd.NBD()
h2.set_strict_mode(0)
h2.connect_uri(${JSON.stringify(fx.uri('mem'))})
t('no_context_block_status', lambda: h2.block_status(512, 0, lambda *a: 0))
h3 = nbd.NBD()
h3.add_meta_context('base:allocation')
h3.connect_uri(${JSON.stringify(fx.uri('nofast'))})
t('fast_zero_unsupported', lambda: h3.zero(65536, 0, flags=nbd.CMD_FLAG_FAST_ZERO))
t('slow_zero', lambda: h3.zero(65536, 0))
t('block_status_req_one', lambda: h3.block_status(65536, 0, lambda *a: 0, flags=nbd.CMD_FLAG_REQ_ONE))
h.shutdown()
h2.shutdown()
h3.shutdown()
print(json.dumps(res))
`;
    const r = await runOk('nbdsh', ['-c', script]);
    const res = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(res).toEqual({
      oob_read: 'EINVAL',
      oob_read_huge: 'EINVAL',
      oob_trim: 'EINVAL',
      oob_cache: 'EINVAL',
      oob_block_status: 'EINVAL',
      oob_write: 'ENOSPC',
      oob_zero: 'ENOSPC',
      unaligned_offset: 'EINVAL',
      unaligned_length: 'EINVAL',
      unaligned_write: 'EINVAL',
      unknown_flag: 'EINVAL',
      flag_wrong_command: 'EINVAL',
      zero_pread: 'ok:0',
      zero_pwrite: 'ok',
      zero_trim: 'ok',
      zero_zero: 'ok',
      zero_cache: 'ok',
      oversize_read: 'EOVERFLOW',
      oversize_write: 'EINVAL',
      still_works: 'ok:4096',
      still_works_data: true,
      no_context_block_status: 'EINVAL',
      fast_zero_unsupported: 'ENOTSUP',
      slow_zero: 'ok',
      block_status_req_one: 'ok',
    });
  });

  it('a read-only export refuses writes (qemu-io fails, nbdsh gets EPERM)', async () => {
    const q = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 4k', fx.uri('ro')]);
    expect(q.code !== 0 || /failed|Permission|read-only|read only/i.test(q.stdout + q.stderr)).toBe(true);
    expect(q.stdout).not.toContain('wrote 4096/4096');
    const script = `
import json
res = {}
def t(name, f):
    try:
        f()
        res[name] = 'ok'
    except nbd.Error as e:
        res[name] = str(e.errno)
h.set_strict_mode(0)
h.connect_uri(${JSON.stringify(fx.uri('ro'))})
res['read_only'] = h.is_read_only()
t('pwrite', lambda: h.pwrite(b'x' * 512, 0))
t('trim', lambda: h.trim(512, 0))
t('zero', lambda: h.zero(512, 0))
t('pread', lambda: h.pread(512, 0))
t('flush', lambda: h.flush())
h.shutdown()
print(json.dumps(res))
`;
    const r = await runOk('nbdsh', ['-c', script]);
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toEqual({
      read_only: true,
      pwrite: 'EPERM',
      trim: 'EPERM',
      zero: 'EPERM',
      pread: 'ok',
      flush: 'ok',
    });
    expect(ro.allocatedBytes()).toBe(0);
  });

  it('works over TCP on 127.0.0.1 (port 0)', async () => {
    const exp = new MemoryExport({ name: 'tcp', size: 4 * MiB });
    const server = new NbdServer({ exports: (n) => (n === 'tcp' ? exp : undefined), defaultExport: 'tcp' });
    const addr = await server.listen({ port: 0, host: '127.0.0.1' });
    try {
      expect(addr.port).toBeGreaterThan(0);
      const uri = `nbd://127.0.0.1:${addr.port}/tcp`;
      const info = JSON.parse((await runOk('nbdinfo', ['--json', uri])).stdout).exports[0];
      expect(info['export-size']).toBe(4 * MiB);
      const r = await runOk('qemu-io', [
        '-f',
        'raw',
        '-c',
        'write -P 0x33 4k 8k',
        '-c',
        'read -P 0x33 4k 8k',
        uri,
      ]);
      expect(r.stdout).not.toMatch(/verification failed/i);
      // The empty export name maps to defaultExport.
      const d = JSON.parse((await runOk('nbdinfo', ['--json', `nbd://127.0.0.1:${addr.port}`])).stdout);
      expect(d.exports[0]['export-size']).toBe(4 * MiB);
    } finally {
      await server.close();
    }
  });

  it('serves a FileExport to qemu-io', async () => {
    const path = join(fx.dir, 'file-export.img');
    await writeFile(path, Buffer.alloc(2 * MiB));
    const fe = await FileExport.open(path, { name: 'file' });
    const server = new NbdServer({ exports: (n) => (n === 'file' ? fe : undefined) });
    const sock = join(fx.dir, 'file.sock');
    await server.listen({ path: sock });
    try {
      const uri = `nbd+unix:///file?socket=${sock}`;
      const r = await runOk('qemu-io', [
        '-f',
        'raw',
        '-c',
        'write -P 0x77 64k 128k',
        '-c',
        'write -z 1M 64k',
        '-c',
        'flush',
        '-c',
        'read -P 0x77 64k 128k',
        uri,
      ]);
      expect(r.stdout).not.toMatch(/verification failed/i);
      const disk = await readFile(path);
      expect(disk.subarray(64 * 1024, 192 * 1024).every((b) => b === 0x77)).toBe(true);
      const m = JSON.parse((await runOk('qemu-img', ['map', '--output=json', uri])).stdout);
      expect(m).toEqual([expect.objectContaining({ start: 0, length: 2 * MiB, data: true, zero: false })]);
    } finally {
      await server.close();
      await fe.close();
    }
  });

  it.skipIf(!existsSync('/dev/nbd0'))('kernel nbd-client reads and writes through /dev/nbd0', async () => {
    await runOk('nbd-client', ['-unix', fx.sock, '/dev/nbd0', '-N', 'mem', '-b', '4096']);
    try {
      await runOk('dd', ['if=/dev/urandom', 'of=/dev/nbd0', 'bs=64k', 'count=16', 'oflag=direct']);
      await runOk('dd', ['if=/dev/nbd0', 'of=/dev/null', 'bs=64k', 'count=16', 'iflag=direct']);
    } finally {
      await run('nbd-client', ['-d', '/dev/nbd0']);
    }
  });
});
