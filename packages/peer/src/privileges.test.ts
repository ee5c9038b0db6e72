import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ArchipelagoError } from '@archipelago/libxseg';
import { afterAll, describe, expect, it } from 'vitest';
import { lookupGroup, lookupUser, makeServiceDir, resolveAccount } from './privileges.js';

const dir = mkdtempSync(join(tmpdir(), 'archip-priv-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('accounts', () => {
  it('looks users and groups up in the account databases', () => {
    expect(lookupUser('root')).toEqual({ uid: 0, gid: 0 });
    expect(lookupGroup('root')).toBe(0);
    expect(lookupUser('archip-no-such-user')).toBeNull();
    expect(lookupGroup('archip-no-such-group')).toBeNull();
    expect(resolveAccount('root', 'root', 'f: [ARCHIPELAGO]')).toEqual({
      user: 'root',
      uid: 0,
      group: 'root',
      gid: 0,
    });
  });

  it('a missing USER or GROUP is EINVAL_CONFIG naming the key and where it is set', () => {
    const fail = (u: string, g: string) => {
      try {
        resolveAccount(u, g, '/etc/a.conf: [ARCHIPELAGO]');
      } catch (e) {
        return e as ArchipelagoError;
      }
      throw new Error('no error');
    };
    const u = fail('archip-no-such-user', 'root');
    expect(u.code).toBe('EINVAL_CONFIG');
    expect(u.message).toMatch(/^\/etc\/a\.conf: \[ARCHIPELAGO\] USER = archip-no-such-user: no such user/);
    expect(u.details.key).toBe('USER');
    const g = fail('root', 'archip-no-such-group');
    expect(g.message).toMatch(/^\/etc\/a\.conf: \[ARCHIPELAGO\] GROUP = archip-no-such-group: no such group/);
    expect(g.details.key).toBe('GROUP');
  });
});

describe('makeServiceDir', () => {
  it('makes every missing directory 2770 (owned by the account as root) and leaves existing ones', () => {
    const top = join(dir, 'a');
    const nobody = lookupUser('nobody');
    const account =
      nobody && process.getuid?.() === 0
        ? { user: 'nobody', uid: nobody.uid, group: 'nogroup', gid: nobody.gid }
        : null;
    const old = process.umask(0o022);
    try {
      expect(makeServiceDir(join(top, 'b', 'c'), account)).toEqual([
        top,
        join(top, 'b'),
        join(top, 'b', 'c'),
      ]);
    } finally {
      process.umask(old);
    }
    for (const d of [top, join(top, 'b', 'c')]) {
      const st = statSync(d);
      expect((st.mode & 0o7777).toString(8)).toBe('2770');
      if (account) expect([st.uid, st.gid]).toEqual([account.uid, account.gid]);
    }
    expect(makeServiceDir(join(top, 'b'), null)).toEqual([]);
    expect((statSync(dir).mode & 0o7777).toString(8)).toBe('700'); // mkdtemp's, untouched
  });
});
