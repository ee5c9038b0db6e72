import type * as http from 'node:http';
import { describe, expect, it } from 'vitest';
import { Auth } from './auth.js';
import type { HttpError } from './http.js';

/** A request as `Auth` reads it, and an answer recording its head. */
const req = (headers: Record<string, string>, method = 'GET') =>
  ({ method, headers }) as unknown as http.IncomingMessage;
function login(auth: Auth, user: string, key: string): Record<string, string> {
  let head: Record<string, string> = {};
  const res = {
    writeHead: (_: number, h: Record<string, string>) => {
      head = h;
    },
    end: () => {},
  } as unknown as http.ServerResponse;
  auth.login(req({ 'x-auth-user': user, 'x-auth-key': key }), res, 'http://gw');
  return head;
}
const status = (auth: Auth, token: string, account: string): number => {
  try {
    auth.authorize(req({ 'x-auth-token': token }), account);
    return 200;
  } catch (e) {
    return (e as HttpError).status;
  }
};

describe('Auth: token lifetime', () => {
  const users = [
    { user: 'a:u', key: 'ka', account: 'a' },
    { user: 'b:u', key: 'kb', account: 'b', token: 'AUTH_tkfixed' },
  ];

  it('a token lives as long as X-Auth-Token-Expires says; a login after that gives another', () => {
    let now = 0;
    const auth = new Auth({ users, tokens: { AUTH_tkshared: 'a' }, tokenLifetime: 60 }, () => now);
    const h = login(auth, 'a:u', 'ka');
    expect(h['X-Auth-Token-Expires']).toBe('60');
    const t = h['X-Auth-Token']!;
    now = 59_999;
    expect(status(auth, t, 'a')).toBe(200);
    // A second login while it is valid gives the same token, for a full lifetime again.
    expect(login(auth, 'a:u', 'ka')['X-Auth-Token']).toBe(t);
    now = 119_998;
    expect(status(auth, t, 'a')).toBe(200);
    now = 119_999;
    expect(status(auth, t, 'a')).toBe(401);
    const t2 = login(auth, 'a:u', 'ka')['X-Auth-Token']!;
    expect(t2).not.toBe(t);
    expect(status(auth, t2, 'a')).toBe(200);
    expect(status(auth, t, 'a')).toBe(401);
    // Pre-shared tokens do not expire.
    now = 1e12;
    expect(status(auth, 'AUTH_tkshared', 'a')).toBe(200);
  });

  it('a configured user token is valid for one lifetime from start, and again after each login', () => {
    let now = 1000;
    const auth = new Auth({ users, tokenLifetime: 10 }, () => now);
    expect(status(auth, 'AUTH_tkfixed', 'b')).toBe(200);
    now = 11_000;
    expect(status(auth, 'AUTH_tkfixed', 'b')).toBe(401);
    expect(login(auth, 'b:u', 'kb')['X-Auth-Token']).toBe('AUTH_tkfixed');
    expect(status(auth, 'AUTH_tkfixed', 'b')).toBe(200);
    expect(status(auth, 'AUTH_tkfixed', 'a')).toBe(403);
  });

  it('refuses a lifetime that is not whole seconds >= 1', () => {
    expect(() => new Auth({ users, tokenLifetime: 0 })).toThrow(RangeError);
    expect(() => new Auth({ users, tokenLifetime: 1.5 })).toThrow(RangeError);
  });
});
