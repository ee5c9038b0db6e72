/**
 * The provider's scripts run as Ganeti runs them (test/ganeti.ts: environment only, the node's
 * /etc/archipelago/archipelago.conf, exit status and stdout checked) against the real vlmc of
 * this repository on the file blocker: a disk's life (create, attach, I/O through the printed
 * URI with qemu-io, snapshot, grow, open/close, detach, remove), a clone from EXTP_ORIGIN, the
 * errors, and the umask the scripts apply. Two hosts (migration): test-e2e/ganeti/.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// The repository's own codec (this package has no TypeScript dependencies of its own).
import { merkleRoot, pithosBlockHash, stripTrailingZeros } from '../../mapfile/src/index.js';
import {
  ganetiUnavailable,
  kvmUri,
  NODE_PATH,
  nodeEtc,
  PROVIDER,
  parseAttach,
  runScript,
  SCRIPTS,
  type ScriptResult,
} from './ganeti.js';

const ROOT = join(import.meta.dirname, '..', '..', '..');
const VLMC = join(ROOT, 'packages/cli/bin/vlmc.js');
// An unbuilt CLI fails the file (a skip would hide it: the bundle's name changed once, and these
// tests were skipped without anyone seeing it).
if (!existsSync(join(ROOT, 'packages/cli/dist/bundle/vlmc.cjs')))
  throw new Error('packages/cli is not built: run "pnpm run build" first');
const unavailable = await ganetiUnavailable();
const MiB = 1024 * 1024;

function sh(cmd: string, args: string[]): Promise<ScriptResult> {
  return new Promise((resolve) =>
    execFile(
      cmd,
      args,
      { env: { ...process.env, PATH: `/usr/bin:${process.env.PATH}` } },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    ),
  );
}

/** qemu-io on `uri`, one -c per command; exit 0 when every pattern read matched. */
const qemuIo = (uri: string, ...cmds: string[]) =>
  sh('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri]);

describe('the files Ganeti looks for', () => {
  it('has the ten executables and a parameters.list Ganeti can read', () => {
    for (const s of SCRIPTS) {
      accessSync(join(PROVIDER, s), constants.X_OK);
      expect(readFileSync(join(PROVIDER, s), 'utf8').startsWith('#!/bin/sh\n')).toBe(true);
    }
    // ganeti ExtStorageFromDisk: one parameter a line, name and description split on whitespace.
    const params = readFileSync(join(PROVIDER, 'parameters.list'), 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => l.trim().split(/\s+/, 1)[0]);
    expect(params).toEqual(['origin', 'origin_size']);
  });
});

describe.skipIf(unavailable !== null)(
  `scripts as Ganeti runs them${unavailable ? ` (${unavailable})` : ''}`,
  () => {
    let dir: string;
    let conf: string;
    let etc: string;
    const vol = '3f1c9a52-6d1e-4c55-9a0b-7e2b8c1d0a11.ext.disk0';
    const run = (action: Parameters<typeof runScript>[0], vars: Record<string, string>, args?: string[]) =>
      runScript(action, vars, { etc, ...(args ? { args } : {}) });
    const vlmc = (...args: string[]) => sh(process.execPath, [VLMC, '-c', conf, ...args]);
    const info = async (name: string) =>
      JSON.parse((await vlmc('info', name, '--json')).stdout) as {
        size: number;
        readonly: boolean;
        lockOwner: string | null;
      };

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'archip-ganeti-'));
      const text = `[ARCHIPELAGO]
RUN_DIR = ${dir}/run
[blockerb]
type = file_blocker
archip_dir = ${dir}/blocks
[blockerm]
type = file_blocker
archip_dir = ${dir}/maps
`;
      for (const d of ['blocks', 'maps', 'run']) await mkdir(join(dir, d));
      etc = await nodeEtc(dir, text);
      conf = join(etc, 'archipelago', 'archipelago.conf');
    });

    afterAll(async () => {
      if (!dir) return;
      for (const name of [vol, `${vol}-clone`]) await vlmc('unmap', name);
      await rm(dir, { recursive: true, force: true });
    });

    it('create, attach (I/O through the URI), snapshot, grow, open/close, detach, remove', async () => {
      const ok = (r: ScriptResult, stdout = '') => {
        expect(r, r.stderr).toMatchObject({ code: 0 });
        expect(r.stdout).toBe(stdout);
      };
      ok(await run('create', { VOL_NAME: vol, VOL_SIZE: '64', VOL_CNAME: 'disk0', VOL_UUID: 'u1' }));
      expect((await info(vol)).size).toBe(64 * MiB);

      // attach: no kernel device here (no nbd module), so line 1 is empty and line 2 the kvm URI.
      const attached = await run('attach', { VOL_NAME: vol });
      expect(attached.code, attached.stderr).toBe(0);
      const sock = join(dir, 'run', `${vol}.sock`);
      expect(attached.stdout).toBe(`\nkvm:nbd+unix:///${vol}?socket=${sock}\n`);
      expect(parseAttach(attached.stdout).device).toBeNull();
      const uri = kvmUri(attached.stdout) as string;
      const w = await qemuIo(uri, 'write -P 0xab 1M 2M');
      expect(w.code, w.stderr + w.stdout).toBe(0);
      // Idempotent: attached again, the same lines.
      expect(await run('attach', { VOL_NAME: vol })).toMatchObject({ code: 0, stdout: attached.stdout });

      // open while mapped: nothing to take (the endpoint holds the lock while it writes).
      ok(await run('open', { VOL_NAME: vol, VOL_OPEN_EXCLUSIVE: 'True' }));
      ok(await run('snapshot', { VOL_NAME: vol, VOL_SNAPSHOT_NAME: `${vol}.snap`, VOL_SNAPSHOT_SIZE: '64' }));
      expect((await info(`${vol}.snap`)).readonly).toBe(true);

      // grow while a client is connected (a running instance): refused, the volume untouched.
      const client: ChildProcess = spawn(
        '/usr/bin/nbdsh',
        ['-u', uri, '-c', 'import sys; sys.stdin.read()'],
        {
          stdio: ['pipe', 'ignore', 'inherit'],
          env: { ...process.env, PATH: `/usr/bin:${process.env.PATH}` },
        },
      );
      const exited = new Promise((r) => client.once('exit', r));
      try {
        for (let i = 0; ; i++) {
          const ss = await sh('ss', ['-xH', 'state', 'connected', 'src', sock]);
          if (ss.stdout.trim() !== '') break;
          expect(i < 100 && client.exitCode === null, 'nbdsh connects').toBe(true);
          await new Promise((r) => setTimeout(r, 50));
        }
        const busy = await run('grow', { VOL_NAME: vol, VOL_SIZE: '64', VOL_NEW_SIZE: '128' });
        expect(busy.code).toBe(1);
        expect(busy.stderr).toMatch(/in use \(1 NBD connections .*stop the instance, then grow/);
        expect((await info(vol)).size).toBe(64 * MiB);
      } finally {
        client.stdin?.end();
        await exited;
      }

      // grow with no client: unmapped, grown, mapped again on the same socket, so the URI attach
      // printed serves the new size and the data.
      ok(await run('grow', { VOL_NAME: vol, VOL_SIZE: '64', VOL_NEW_SIZE: '128' }));
      expect((await info(vol)).size).toBe(128 * MiB);
      const img = await sh('qemu-img', ['info', '--output=json', uri]);
      expect(JSON.parse(img.stdout)['virtual-size']).toBe(128 * MiB);
      const r = await qemuIo(uri, 'read -P 0xab 1M 2M', 'read -P 0 100M 1M');
      expect(r.code, r.stderr + r.stdout).toBe(0);

      // close (mapped): the endpoint lets the lock go; detach unmaps, twice is fine.
      ok(await run('close', { VOL_NAME: vol }));
      ok(await run('detach', { VOL_NAME: vol }));
      ok(await run('detach', { VOL_NAME: vol }));
      expect((await vlmc('showmapped', '--json')).stdout.trim()).toBe('[]');
      expect(existsSync(sock)).toBe(false);

      // open/close of a volume not mapped: the node's lock, then none.
      ok(await run('open', { VOL_NAME: vol }));
      expect((await info(vol)).lockOwner).not.toBeNull();
      ok(await run('close', { VOL_NAME: vol }));
      expect((await info(vol)).lockOwner).toBeNull();
      // (a shared open, VOL_OPEN_EXCLUSIVE=False: test-e2e/ganeti/migration.test.ts)

      ok(await run('setinfo', { VOL_NAME: vol, VOL_METADATA: 'originstname+vm1' }));
      ok(await run('remove', { VOL_NAME: vol }));
      expect((await vlmc('info', vol)).code).toBe(1);
      // removing again (Ganeti retrying) is not an error
      ok(await run('remove', { VOL_NAME: vol }));
    });

    it('create from EXTP_ORIGIN: a thin clone of the snapshot, grown to VOL_SIZE', async () => {
      const snap = `${vol}.snap`;
      expect(await run('verify', { VOL_NAME: vol, EXTP_ORIGIN: snap })).toMatchObject({ code: 0 });
      const clone = `${vol}-clone`;
      const c = await run('create', { VOL_NAME: clone, VOL_SIZE: '256', EXTP_ORIGIN: snap });
      expect(c, c.stderr).toMatchObject({ code: 0, stdout: '' });
      expect((await info(clone)).size).toBe(256 * MiB);
      const a = await run('attach', { VOL_NAME: clone });
      const uri = kvmUri(a.stdout) as string;
      const r = await qemuIo(uri, 'read -P 0xab 1M 2M', 'read -P 0 200M 1M');
      expect(r.code, r.stderr + r.stdout).toBe(0);
      expect(await run('detach', { VOL_NAME: clone })).toMatchObject({ code: 0, stdout: '' });
      expect(await run('remove', { VOL_NAME: clone })).toMatchObject({ code: 0 });
      await vlmc('remove', snap);
    });

    it('create from a Pithos v0 image (EXTP_ORIGIN + EXTP_ORIGIN_SIZE), laid out as the original did', async () => {
      // Pithos: 4 MiB blocks named by the SHA-256 of the block without its trailing zeros (a zero
      // block is the hash of nothing and is not stored); the map is the concatenated 32-byte
      // hashes, no header, named by their Merkle root. Objects live at <dir>/h0h1/h2h3/h4h5/<name>.
      const BS = 4 * MiB;
      const img = Buffer.concat([Buffer.alloc(BS, 0x5a), Buffer.alloc(BS), Buffer.alloc(MiB, 0xc3)]);
      const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
      const put = async (root: string, name: string, data: Uint8Array) => {
        const h = sha(Buffer.from(name));
        const p = join(root, h.slice(0, 2), h.slice(2, 4), h.slice(4, 6), name);
        await mkdir(dirname(p), { recursive: true });
        await writeFile(p, data);
      };
      const blocks = [0, 1, 2].map((i) => img.subarray(i * BS, Math.min(img.length, (i + 1) * BS)));
      const hashes = blocks.map((b) => pithosBlockHash(b));
      for (const [i, b] of blocks.entries())
        if (i !== 1) await put(join(dir, 'blocks'), hashes[i]!, stripTrailingZeros(b));
      const image = merkleRoot(hashes);
      await put(join(dir, 'maps'), image, Buffer.concat(hashes.map((h) => Buffer.from(h, 'hex'))));

      const disk = `${vol}-v0`;
      const c = await run('create', {
        VOL_NAME: disk,
        VOL_SIZE: '16',
        EXTP_ORIGIN: image,
        EXTP_ORIGIN_SIZE: String(img.length),
      });
      expect(c, c.stderr).toMatchObject({ code: 0, stdout: '' });
      expect((await info(disk)).size).toBe(16 * MiB);
      const a = await run('attach', { VOL_NAME: disk });
      const uri = kvmUri(a.stdout) as string;
      const r = await qemuIo(
        uri,
        'read -P 0x5a 0 4M',
        'read -P 0 4M 4M',
        'read -P 0xc3 8M 1M',
        'read -P 0 9M 7M',
      );
      expect(r.code, r.stderr + r.stdout).toBe(0);
      expect(await run('detach', { VOL_NAME: disk })).toMatchObject({ code: 0, stdout: '' });
      expect(await run('remove', { VOL_NAME: disk })).toMatchObject({ code: 0 });
      // A size that does not match the map is refused, and nothing is created.
      const bad = await run('create', {
        VOL_NAME: disk,
        VOL_SIZE: '16',
        EXTP_ORIGIN: image,
        EXTP_ORIGIN_SIZE: String(img.length + BS),
      });
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/ECORRUPT_MAP/);
      expect((await vlmc('info', disk, '--json')).code).toBe(1);
    });

    it('refuses a wrong environment with status 2 and a usage on -h, and fails with vlmc', async () => {
      const noName = await run('create', { VOL_SIZE: '64' });
      expect(noName).toMatchObject({ code: 2, stdout: '' });
      expect(noName.stderr).toContain('VOL_NAME is not set');
      expect((await run('create', { VOL_NAME: 'x', VOL_SIZE: '1G' })).stderr).toContain(
        'is not a size in MiB',
      );
      expect((await run('grow', { VOL_NAME: 'x', VOL_SIZE: '64', VOL_NEW_SIZE: '32' })).code).toBe(2);
      expect((await run('open', { VOL_NAME: 'x', VOL_OPEN_EXCLUSIVE: 'maybe' })).code).toBe(2);
      expect(await run('attach', { VOL_NAME: 'x' }, ['extra'])).toMatchObject({ code: 2, stdout: '' });
      const help = await run('attach', {}, ['--help']);
      expect(help.code).toBe(0);
      expect(help.stderr).toMatch(/^usage: attach/);
      // vlmc's own refusals: exit 1, its message on stderr, nothing on stdout.
      const missing = await run('attach', { VOL_NAME: 'no-such-volume' });
      expect(missing).toMatchObject({ code: 1, stdout: '' });
      expect(missing.stderr).toContain('ENOENT_VOLUME');
      expect((await run('create', { VOL_NAME: 'bad/name', VOL_SIZE: '4' })).stderr).toContain('EINVAL_NAME');
      // verify: unknown parameters, an origin that is no snapshot
      expect((await run('verify', { VOL_NAME: 'x', EXTP_FROMSNAP: 'a' })).code).toBe(2);
      await vlmc('create', 'plainvol', '--size', '4');
      const notSnap = await run('verify', { VOL_NAME: 'x', EXTP_ORIGIN: 'plainvol' });
      expect(notSnap.code).toBe(1);
      expect(notSnap.stderr).toContain('not a snapshot');
      expect((await run('verify', {}, ['config'])).code).toBe(0);
      await vlmc('remove', 'plainvol');
    });

    it("runs vlmc under [ARCHIPELAGO] UMASK of the node configuration (any form Python's int(x, 0) reads)", async () => {
      // A recording vlmc first on PATH: the scripts take the vlmc on PATH when there is one.
      const bin = join(dir, 'stub-bin');
      await mkdir(bin, { recursive: true });
      await writeFile(join(bin, 'vlmc'), '#!/bin/sh\necho "$(umask) $*" >> "$(dirname "$0")/calls"\n');
      await chmod(join(bin, 'vlmc'), 0o755);
      const cases: Array<[string | null, string]> = [
        [null, '0007'],
        ['0o027', '0027'],
        ['022', '0022'],
        ['18', '0022'],
        ['0x3f', '0077'],
      ];
      for (const [value, want] of cases) {
        const e = await nodeEtc(
          join(dir, `umask-${want}-${value}`),
          value === null ? '' : `[ARCHIPELAGO]\nUMASK = ${value}\n`,
        );
        await rm(join(bin, 'calls'), { force: true });
        const r = await runScript(
          'create',
          { VOL_NAME: 'v', VOL_SIZE: '8', EXTP_ORIGIN: 's' },
          { etc: e, path: `${bin}:${NODE_PATH}` },
        );
        expect(r, r.stderr).toMatchObject({ code: 0, stdout: '' });
        expect(await readFile(join(bin, 'calls'), 'utf8')).toBe(`${want} create v --size 8 --snap s\n`);
      }
      const bad = await nodeEtc(join(dir, 'umask-bad'), '[ARCHIPELAGO]\nUMASK = rw\n');
      const r = await runScript('detach', { VOL_NAME: 'v' }, { etc: bad, path: `${bin}:${NODE_PATH}` });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('UMASK = rw is not a umask');
    });
  },
);
