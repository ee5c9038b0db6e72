import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultConfig, loadConfig, serializeConfig } from './config.js';
import { hostIdentity, peerOptions, serviceAccount } from './sections.js';

let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

/** The default configuration with `blockerb` replaced, as a loaded file. */
function config(blockerb: Record<string, unknown>): ReturnType<typeof loadConfig> {
  dir = mkdtempSync(join(tmpdir(), 'archip-peeropts-'));
  const c = defaultConfig(dir);
  const { portno_start, portno_end, nr_ops } = c.blockerb;
  const path = join(dir, 'archipelago.conf');
  // USER/GROUP root: peerOptions looks the account up when run as root (the tests are).
  const ARCHIPELAGO = { ...c.ARCHIPELAGO, USER: 'root', GROUP: 'root' };
  writeFileSync(
    path,
    serializeConfig({ ...c, ARCHIPELAGO, blockerb: { portno_start, portno_end, nr_ops, ...blockerb } }),
  );
  return loadConfig(path);
}

describe("peerOptions: a blocker section's sync reaches its daemon", () => {
  it('file_blocker: sync = flush makes the peer write back; the default syncs every write', () => {
    const wb = config({ type: 'file_blocker', archip_dir: 'blocks', sync: 'flush' });
    expect(peerOptions(wb, 'blockerb').blocker).toMatchObject({ type: 'file_blocker', sync: 'flush' });
    expect(peerOptions(wb, 'blockerm').blocker).toMatchObject({ type: 'file_blocker', sync: 'always' });
  });

  it('rados_blocker: sync = flush as well', () => {
    const wb = config({ type: 'rados_blocker', pool: 'blocks', sync: 'flush' });
    expect(peerOptions(wb, 'blockerb').blocker).toMatchObject({
      type: 'rados_blocker',
      pool: 'blocks',
      sync: 'flush',
    });
  });
});

describe('hostIdentity: one lock identity per host', () => {
  it('is <hostname>_embedded without unique_str, and the same for every wiring', () => {
    const c = config({ type: 'file_blocker', archip_dir: 'blocks' });
    expect(hostIdentity(c, 'h1')).toBe('h1_embedded');
    // The daemons get the same identity: mapperd's volume locks and the blockers' own locks.
    expect(peerOptions(c, 'mapperd').mapperd?.identity).toBe(hostIdentity(c));
    expect(peerOptions(c, 'blockerm').blocker?.identity).toBe(hostIdentity(c));
    expect(peerOptions(c, 'blockerb').blocker?.identity).toBe(hostIdentity(c));
  });

  it('takes unique_str from any blocker or mapperd section, and refuses two that differ', () => {
    const c = config({ type: 'file_blocker', archip_dir: 'blocks', unique_str: 'nodeA' });
    expect(hostIdentity(c, 'h1')).toBe('h1_nodeA');
    (c.config.mapperd as unknown as Record<string, unknown>).unique_str = 'nodeA';
    expect(hostIdentity(c, 'h1')).toBe('h1_nodeA');
    (c.config.blockerm as unknown as Record<string, unknown>).unique_str = 'nodeB';
    expect(() => hostIdentity(c, 'h1')).toThrow(
      /blockerm\.unique_str \(nodeB\) and mapperd\.unique_str \(nodeA\) differ; a host has one identity/,
    );
  });
});

describe('peerOptions: USER/GROUP, UMASK/umask, nr_threads', () => {
  it("carries the account (as root), the section's umask over UMASK, and a blocker's nr_threads", () => {
    const c = config({ type: 'file_blocker', archip_dir: 'blocks', nr_threads: 12, umask: 0o027 });
    const b = peerOptions(c, 'blockerb');
    expect(b).toMatchObject({ umask: 0o027, nrThreads: 12 });
    expect(peerOptions(c, 'blockerm').umask).toBe(0o007);
    expect(peerOptions(c, 'blockerm').nrThreads).toBeUndefined();
    if (process.getuid?.() === 0) expect(b.account).toEqual({ user: 'root', uid: 0, group: 'root', gid: 0 });
    else expect(b.account).toBeUndefined(); // not root: no switch to make
  });

  it('refuses nr_threads beyond the pool limit, naming the file and the key', () => {
    // Set after loading: what peerOptions itself refuses, whatever the loader checks.
    const c = config({ type: 'file_blocker', archip_dir: 'blocks' });
    (c.config.blockerb as unknown as Record<string, unknown>).nr_threads = 5000;
    expect(() => peerOptions(c, 'blockerb')).toThrow(
      /archipelago\.conf: \[blockerb\] nr_threads must be an integer in 1\.\.1024/,
    );
  });

  it.skipIf(process.getuid?.() !== 0)(
    'as root, a USER that does not exist is EINVAL_CONFIG naming the file',
    () => {
      const c = config({ type: 'file_blocker', archip_dir: 'blocks' });
      c.config.ARCHIPELAGO.USER = 'archip-no-such-user';
      expect(() => peerOptions(c, 'blockerb')).toThrow(
        `${c.path}: [ARCHIPELAGO] USER = archip-no-such-user: no such user on this host`,
      );
      // The per-user default configuration is its user's: no switch, no lookup.
      expect(serviceAccount({ ...c, source: 'default' })).toBeNull();
    },
  );
});
