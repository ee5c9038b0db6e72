/** Authentication: Swift v1 auth (`GET /auth/v1.0`) and the token check of every other request. */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type * as http from 'node:http';
import type { GatewayAuth, GatewayOptions, GatewayUser } from './context.js';
import { HttpError, header } from './http.js';
import { checkAccount } from './names.js';

/** The request paths of Swift v1 auth. */
export const AUTH_PATHS: ReadonlySet<string> = new Set(['/auth/v1.0', '/auth/v1', '/v1.0']);

/** Lifetime of the tokens handed out at auth, seconds (Swift's tempauth default). */
export const DEFAULT_TOKEN_LIFETIME = 86400;

/** A token handed out at auth: the account it grants, until when (a `now()` reading, ms). */
interface Issued {
  account: string;
  expires: number;
}

/**
 * Users and tokens of one gateway (`opts.auth`; `false`: every account is open).
 *
 * A login (`GET /auth/v1.0` with the user's key) hands out the user's token for
 * `tokenLifetime` seconds, the `X-Auth-Token-Expires` it answers: the token still valid when
 * there is one (concurrent clients of one user share it; its lifetime starts again), else a new
 * random one, or the user's configured `token`. Past its lifetime a token gets 401 and the client
 * authenticates again. A configured user token is valid from start for one lifetime, as if issued
 * then. Pre-shared `tokens` (Pithos style) never expire: they are configuration, like keys.
 */
export class Auth {
  private readonly shared = new Map<string, string>();
  private readonly issued = new Map<string, Issued>();
  private readonly users = new Map<string, GatewayUser & { current?: string }>();
  private readonly open: boolean;
  /** Token lifetime, ms. */
  private readonly lifetime: number;

  /** `now`: a monotonic clock in ms (tests may pass their own). */
  constructor(
    auth: GatewayOptions['auth'],
    private readonly now: () => number = () => performance.now(),
  ) {
    this.open = auth === false;
    this.lifetime = tokenLifetime(auth) * 1000;
    if (auth) {
      for (const [t, a] of Object.entries(auth.tokens ?? {})) this.shared.set(t, checkAccount(a));
      for (const u of auth.users ?? []) {
        const user = { ...u, account: checkAccount(u.account) };
        this.users.set(u.user, user);
        if (u.token !== undefined) this.issue(user);
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
    const token = this.issue(u);
    const storage = `${baseUrl}/${encodeURIComponent(u.account)}`;
    res.writeHead(200, {
      'X-Storage-Url': storage,
      'X-Auth-Token': token,
      'X-Storage-Token': token,
      'X-Auth-Token-Expires': String(this.lifetime / 1000),
      'Content-Length': 0,
    });
    res.end();
  }

  /** Throws 401 without a known, unexpired token, 403 when the token grants another account. */
  authorize(req: http.IncomingMessage, account: string): void {
    if (this.open) return;
    const token = header(req, 'x-auth-token') ?? header(req, 'x-storage-token');
    if (token === undefined) throw new HttpError(401, 'authentication required (X-Auth-Token)');
    let acct = this.shared.get(token);
    if (acct === undefined) {
      const t = this.issued.get(token);
      if (t === undefined) throw new HttpError(401, 'invalid token');
      if (this.now() >= t.expires) {
        this.issued.delete(token);
        throw new HttpError(401, 'the token has expired: authenticate again');
      }
      acct = t.account;
    }
    if (acct !== account) throw new HttpError(403, `the token does not grant account ${account}`);
  }

  /** Hands out `u`'s token for one lifetime from now: the current one while valid, else a new one. */
  private issue(u: GatewayUser & { current?: string }): string {
    const now = this.now();
    const cur = u.current === undefined ? undefined : this.issued.get(u.current);
    let token = u.current;
    if (token === undefined || cur === undefined || now >= cur.expires) {
      if (token !== undefined) this.issued.delete(token);
      token = u.token ?? `AUTH_tk${randomBytes(16).toString('hex')}`;
      u.current = token;
    }
    this.issued.set(token, { account: u.account, expires: now + this.lifetime });
    return token;
  }
}

/** `auth.tokenLifetime`, checked: whole seconds >= 1 (default one day). */
function tokenLifetime(auth: GatewayAuth | false): number {
  const s = auth ? (auth.tokenLifetime ?? DEFAULT_TOKEN_LIFETIME) : DEFAULT_TOKEN_LIFETIME;
  if (!Number.isSafeInteger(s) || s < 1) throw new RangeError('tokenLifetime: whole seconds, at least 1');
  return s;
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
