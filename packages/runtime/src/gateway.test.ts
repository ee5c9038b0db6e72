import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GATEWAY_ENV, gatewayCredentials, readAuthFile } from './gateway.js';

const dir = mkdtempSync(join(tmpdir(), 'archip-gw-auth-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function authFile(name: string, text: string, mode: number): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  chmodSync(p, mode);
  return p;
}

describe('gateway credentials', () => {
  it('reads users and tokens from a private file', () => {
    const p = authFile(
      'ok',
      '# comment\nuser acct acct:me k1 AUTH_tk1\n  token  AUTH_tk2 other # why\n',
      0o640,
    );
    expect(readAuthFile(p)).toEqual({
      users: [{ account: 'acct', user: 'acct:me', key: 'k1', token: 'AUTH_tk1' }],
      tokens: { AUTH_tk2: 'other' },
    });
  });

  it('refuses a file others can read or its group can write, and names a bad line without its key', () => {
    expect(() => readAuthFile(authFile('world', 'user a a:u k\n', 0o604))).toThrow(
      /accessible by others \(mode 0604\)/,
    );
    expect(() => readAuthFile(authFile('group', 'user a a:u k\n', 0o660))).toThrow(/writable by its group/);
    expect(() => readAuthFile(join(dir, 'none'))).toThrow(/^auth file .*none: ENOENT/);
    expect(() => readAuthFile(dir)).toThrow(`auth file ${dir}: not a regular file`);
    const bad = authFile('bad', 'user a a:u k\nuser a s3cret\n', 0o600);
    expect(() => readAuthFile(bad)).toThrow(`bad user at ${bad}:2: want ACCOUNT USER KEY [TOKEN]`);
    expect(() => readAuthFile(bad)).not.toThrow(/s3cret/);
  });

  it('takes the environment and the command line too, and clears the environment', () => {
    const env: NodeJS.ProcessEnv = {
      [GATEWAY_ENV.users]: 'e,e:u,ke  f,f:u,kf,AUTH_tkf',
      [GATEWAY_ENV.tokens]: 'AUTH_tke,e',
      [GATEWAY_ENV.authFile]: authFile('env', 'token AUTH_tkfile g\n', 0o600),
      OTHER: 'kept',
    };
    const c = gatewayCredentials({ env, users: ['a,a:u,ka'], tokens: ['AUTH_tka,a'] });
    expect(c.users.map((u) => u.user)).toEqual(['a:u', 'e:u', 'f:u']);
    expect(c.users[2]).toEqual({ account: 'f', user: 'f:u', key: 'kf', token: 'AUTH_tkf' });
    expect(c.tokens).toEqual({ AUTH_tka: 'a', AUTH_tke: 'e', AUTH_tkfile: 'g' });
    expect(env).toEqual({ OTHER: 'kept' });
  });
});
