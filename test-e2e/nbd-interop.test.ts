/**
 * Interop through `vlmc map`: real NBD clients (qemu-img, qemu-io, nbdinfo, nbdcopy, nbdsh, fio)
 * against volumes served by the background endpoint, on the file blocker.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Env, requireTool, sh } from './lib/vlmc.js';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
let env: Env;
let uri: string;

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Runs a python snippet under nbdsh against `u` (h = the connected handle). */
function nbdsh(u: string, code: string) {
  return sh('nbdsh', ['-u', u, '-c', code]);
}

beforeAll(async () => {
  requireTool('qemu-img', 'qemu-utils');
  requireTool('qemu-io', 'qemu-utils');
  requireTool('nbdinfo', 'libnbd-bin');
  requireTool('nbdcopy', 'libnbd-bin');
  requireTool('nbdsh', 'libnbd-bin + python3-libnbd');
  requireTool('fio', 'fio');
  env = await Env.create('nbd');
  await env.ok('create', 'vm', '--size', '64M');
  uri = await env.ok('map', 'vm');
});

afterAll(async () => {
  await env?.dispose();
});

describe('vlmc map', () => {
  it('prints an NBD URI that qemu-img opens with the volume size', async () => {
    expect(uri).toMatch(/^nbd\+unix:\/\/\/vm\?socket=\/.+\/vm\.sock$/);
    const r = await sh('qemu-img', ['info', '--output=json', uri]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)['virtual-size']).toBe(SIZE);
  });

  it('qemu-io writes and reads patterns across object boundaries', async () => {
    const off = 4 * MiB - 3000;
    const w = await sh('qemu-io', ['-f', 'raw', '-c', `write -P 0x5a ${off} 10000`, uri]);
    expect(w.code, w.stderr + w.stdout).toBe(0);
    const r = await sh('qemu-io', [
      '-f',
      'raw',
      '-c',
      `read -P 0x5a ${off} 10000`,
      '-c',
      `read -P 0 ${off + 10000} 4096`,
      uri,
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
  });

  it('reports never-written blocks as zero holes (qemu-img map, nbdinfo --map)', async () => {
    const r = await sh('qemu-img', ['map', '--output=json', '-f', 'raw', uri]);
    expect(r.code, r.stderr).toBe(0);
    const extents = JSON.parse(r.stdout) as Array<{
      start: number;
      length: number;
      data: boolean;
      zero: boolean;
    }>;
    const at = (o: number) => extents.find((e) => e.start <= o && o < e.start + e.length)!;
    // Blocks 0 and 1 hold the pattern written across their boundary; block 3 was never written.
    expect(at(4 * MiB - 100)).toMatchObject({ data: true });
    expect(at(12 * MiB)).toMatchObject({ data: false, zero: true });
    expect(at(40 * MiB)).toMatchObject({ data: false, zero: true });
    const m = await sh('nbdinfo', ['--map', uri]);
    expect(m.code, m.stderr).toBe(0);
    expect(m.stdout).toMatch(/hole,zero/);
    expect(m.stdout).toMatch(/\bdata\b/);
  });

  it('nbdinfo shows flags, block sizes, base:allocation and lists the export', async () => {
    const r = await sh('nbdinfo', ['--json', uri]);
    expect(r.code, r.stderr).toBe(0);
    const exp = JSON.parse(r.stdout).exports[0];
    expect(exp['export-name']).toBe('vm');
    expect(exp['export-size']).toBe(SIZE);
    for (const f of ['can_multi_conn', 'can_flush', 'can_fua', 'can_trim', 'can_zero'])
      expect(exp[f], f).toBe(true);
    expect(exp.is_read_only).toBe(false);
    expect(exp.contexts).toContain('base:allocation');
    const l = await sh('nbdinfo', ['--list', uri]);
    expect(l.code, l.stderr).toBe(0);
    expect(l.stdout).toMatch(/export="vm"/);
  });

  it('qemu-img convert in and out is byte-exact; nbdcopy with 4 connections agrees', async () => {
    const src = join(env.dir, 'src.raw');
    const data = Buffer.concat([randomBytes(12 * MiB), Buffer.alloc(8 * MiB), randomBytes(4 * MiB)]);
    await writeFile(src, data);
    const inp = await sh('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, uri]);
    expect(inp.code, inp.stderr).toBe(0);
    const out = join(env.dir, 'out.raw');
    const o = await sh('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, out]);
    expect(o.code, o.stderr).toBe(0);
    const back = await readFile(out);
    expect(back.length).toBe(SIZE);
    expect(sha(back.subarray(0, data.length))).toBe(sha(data));
    expect(back.subarray(data.length).every((b) => b === 0)).toBe(true);
    const out2 = join(env.dir, 'out2.raw');
    const c = await sh('nbdcopy', ['--connections', '4', '--threads', '4', uri, out2]);
    expect(c.code, c.stderr).toBe(0);
    expect(sha(await readFile(out2))).toBe(sha(back));
    // The 8 MiB zero region went in as zeros: those blocks stay zero blocks (no storage).
    const info = (await env.vlmc('info', 'vm', '--json')).json as { allocated: number };
    expect(info.allocated).toBeLessThanOrEqual(16 - 2);
    expect((await stat(out)).size).toBe(SIZE);
  });

  it('passes a fio verify job through the nbd engine', async () => {
    const r = await sh('fio', [
      '--name=verify',
      '--ioengine=nbd',
      `--uri=${uri}`,
      '--rw=randwrite',
      '--bs=4k',
      '--size=16m',
      '--offset=32m',
      '--iodepth=16',
      '--verify=crc32c',
      '--do_verify=1',
      '--verify_fatal=1',
      '--verify_state_save=0',
      '--output-format=json',
    ]);
    expect(r.code, r.stderr + r.stdout.slice(0, 2000)).toBe(0);
    // The nbd engine prints "fio: connected to NBD server" before the JSON document.
    const job = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0];
    expect(job.error).toBe(0);
    expect(job.write.io_bytes).toBe(16 * MiB);
    expect(job.read.io_bytes).toBe(16 * MiB); // the verify pass read everything back
  });

  it('answers bad requests as the spec says and keeps the connection (libnbd strict mode off)', async () => {
    const code = `
import nbd
h.set_strict_mode(0)
size = h.get_size()
def err(f):
    try:
        f()
        return 'ok'
    except nbd.Error as e:
        return e.errnum
out = []
out.append(err(lambda: h.pread(512, size)))           # past the end
out.append(err(lambda: h.pread(512, size - 100)))     # straddles the end
out.append(err(lambda: h.pwrite(b'x' * 512, size)))   # write past the end
out.append(err(lambda: h.pread(512, 0, flags=0x40)))  # unknown flag
out.append(err(lambda: h.pread(0, 0)))                # zero length
out.append(err(lambda: h.trim(0, 0)))
out.append(len(h.pread(4096, 4 * 1024 * 1024 - 3000)))
print(out)
`;
    const r = await nbdsh(uri, code);
    expect(r.code, r.stderr).toBe(0);
    const EINVAL = 22;
    const ENOSPC = 28;
    expect(r.stdout.trim()).toBe(`[${EINVAL}, ${EINVAL}, ${ENOSPC}, ${EINVAL}, 'ok', 'ok', 4096]`);
  });
});

describe('snapshots and clones of a mapped volume', () => {
  it('snapshots through the holder; the snapshot maps read-only (EPERM) and never sees later writes', async () => {
    await sh('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 1M', uri]);
    const snap = await env.vlmc('snapshot', 'vm', 'vm-s1', '--json');
    expect(snap.code, snap.stderr).toBe(0);
    expect(snap.json).toMatchObject({ name: 'vm-s1', readonly: true });
    await sh('qemu-io', ['-f', 'raw', '-c', 'write -P 0x22 0 1M', uri]);
    const suri = await env.ok('map', 'vm-s1');
    const info = JSON.parse((await sh('nbdinfo', ['--json', suri])).stdout).exports[0];
    expect(info.is_read_only).toBe(true);
    const r = await sh('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x11 0 1M', suri]);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
    const w = await nbdsh(
      suri,
      "import nbd\ntry:\n  h.pwrite(b'x'*512, 0)\n  print('ok')\nexcept nbd.Error as e:\n  print(e.errnum)",
    );
    expect(w.stdout.trim()).toBe('1'); // EPERM
    // A clone's writes never show in its snapshot.
    await env.ok('create', 'vm-c1', '--snap', 'vm-s1');
    const curi = await env.ok('map', 'vm-c1');
    await sh('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 512 4096', curi]);
    const cr = await sh('qemu-io', [
      '-f',
      'raw',
      '-c',
      'read -P 0x11 0 512',
      '-c',
      'read -P 0x33 512 4096',
      curi,
    ]);
    expect(cr.stdout).not.toMatch(/Pattern verification failed/);
    const sr = await sh('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x11 0 1M', suri]);
    expect(sr.stdout).not.toMatch(/Pattern verification failed/);
    await env.ok('unmap', 'vm-c1');
    await env.ok('unmap', suri);
  });

  it('snapshots a volume under a running fio workload: I/O drains, resumes, and verifies', async () => {
    const fio = sh('fio', [
      '--name=busy',
      '--ioengine=nbd',
      `--uri=${uri}`,
      '--rw=randwrite',
      '--bs=64k',
      '--size=24m',
      '--offset=8m',
      '--iodepth=8',
      '--verify=crc32c',
      '--do_verify=1',
      '--verify_fatal=1',
      '--verify_state_save=0',
      '--output-format=json',
    ]);
    await new Promise((r) => setTimeout(r, 300));
    const snap = await env.vlmc('snapshot', 'vm', 'vm-busy', '--json');
    expect(snap.code, snap.stderr).toBe(0);
    const r = await fio;
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0].error).toBe(0);
    const info = (await env.vlmc('info', 'vm-busy', '--json')).json as { readonly: boolean; size: number };
    expect(info).toMatchObject({ readonly: true, size: SIZE });
  });

  it('refuses remove, rename and resize of a mapped volume; showmapped lists it', async () => {
    for (const args of [
      ['rm', 'vm'],
      ['rename', 'vm', 'vm2'],
      ['resize', 'vm', '--size', '128M'],
    ]) {
      const r = await env.vlmc(...args);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^vlmc: EBUSY: .*mapped/);
    }
    const s = await env.vlmc('showmapped', '--json');
    const rows = s.json as Array<{ volume: string; uri: string; pid: number; alive: boolean }>;
    expect(rows.map((e) => [e.volume, e.uri, e.alive])).toEqual([['vm', uri, true]]);
    const info = await env.vlmc('info', 'vm', '--json');
    expect(info.json).toMatchObject({ name: 'vm', size: SIZE });
  });

  it('detects a crashed endpoint as stale; unmap cleans up and releases the lock', async () => {
    await env.ok('create', 'crashy', '--size', '8M');
    const curi = await env.ok('map', 'crashy');
    const entry = (
      (await env.vlmc('showmapped', '--json')).json as Array<{ volume: string; pid: number }>
    ).find((e) => e.volume === 'crashy')!;
    await sh('qemu-io', ['-f', 'raw', '-c', 'write -P 0x44 0 64k', curi]);
    process.kill(entry.pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    const rows = (await env.vlmc('showmapped', '--json')).json as Array<{ volume: string; alive: boolean }>;
    expect(rows.find((e) => e.volume === 'crashy')?.alive).toBe(false);
    expect((await env.vlmc('showmapped')).stdout).toMatch(/crashy .*stale/);
    await env.ok('unmap', 'crashy');
    const info = (await env.vlmc('info', 'crashy', '--json')).json as { lockOwner: string | null };
    expect(info.lockOwner).toBeNull();
    // The acknowledged write survived the crash.
    const again = await env.ok('map', 'crashy', '--port', '0');
    expect(again).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/crashy$/);
    const r = await sh('qemu-io', ['-f', 'raw', '-c', 'read -P 0x44 0 64k', again]);
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
    await env.ok('unmap', again);
  });

  it('says clearly when the kernel has no nbd module (--device)', async () => {
    if (existsSync('/sys/module/nbd')) return; // the kernel path is exercised where the module exists
    const r = await env.vlmc('map', 'vm-s1', '--device', '/dev/nbd0');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^vlmc: ENOTSUP: cannot attach \/dev\/nbd0: this kernel has no nbd module/);
  });
});
