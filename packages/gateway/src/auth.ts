/** Authentication: Swift v1 auth (`GET /auth/v1.0`) and the token check of every other request. */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type * as http from 'node:http';
import type { GatewayOptions, GatewayUser } from './context.js';
import { HttpError, header } from './http.js';
import { checkAccount } from './names.js';

/** The request paths of Swift v1 auth. */
export const AUTH_PATHS: ReadonlySet<string> = new Set(['/auth/v1.0', '/auth/v1', '/v1.0']);

/** Users and tokens of one gateway (`opts.auth`; `false`: every account is open). */
export class Auth {
  private readonly tokens = new Map<string, string>();
  private readonly users = new Map<string, GatewayUser & { token: string }>();
  private readonly open: boolean;

  constructor(auth: GatewayOptions['auth']) {
    this.open = auth === false;
    if (auth) {
      for (const [t, a] of Object.entries(auth.tokens ?? {})) this.tokens.set(t, checkAccount(a));
      for (const u of auth.users ?? []) {
        const token = u.token ?? `AUTH_tk${randomBytes(16).toString('hex')}`;
        this.users.set(u.user, { ...u, account: checkAccount(u.account), token });
        this.tokens.set(token, u.account);
      }
    }
  }

  /** `GET /auth/v1.0`: X-Auth-User and X-Auth-Key → 200 with X-Storage-Url and X-Auth-Token. */
  login(req: http.IncomingMessage, res: http.ServerResponse, baseUrl: string): void {
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, 'use GET');
    const user = header(req, 'x-auth-user') ?? header(req, 'x-storage-user');
    const key = header(req, 'x-auth-key') ?? header(req, 'x-storage-pass');
    const u = user === undefined ? undefined : this.users.get(user);
    if (!u || key === undefined || !safeEqual(key, u.key)) throw new HttpError(401, 'bad user or key');
    const storage = `${baseUrl}/${encodeURIComponent(u.account)}`;
    res.writeHead(200, {
      'X-Storage-Url': storage,
      'X-Auth-Token': u.token,
      'X-Storage-Token': u.token,
      'X-Auth-Token-Expires': '86400',
      'Content-Length': 0,
    });
    res.end();
  }

  /** Throws 401 without a known token, 403 when the token grants another account. */
  authorize(req: http.IncomingMessage, account: string): void {
    if (this.open) return;
    const token = header(req, 'x-auth-token') ?? header(req, 'x-storage-token');
    if (token === undefined) throw new HttpError(401, 'authentication required (X-Auth-Token)');
    const acct = this.tokens.get(token);
    if (acct === undefined) throw new HttpError(401, 'invalid token');
    if (acct !== account) throw new HttpError(403, `the token does not grant account ${account}`);
  }
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
