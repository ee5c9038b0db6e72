/**
 * The gateway as an operator runs it (`archipelago-gateway`, built: `pnpm run build` first): its
 * keys stay off its command line, tokens expire as X-Auth-Token-Expires says, and stalled
 * request heads and bodies are cut (slowloris) with nothing stored.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { curl, rawExchange } from './helpers.js';

const GATEWAY = resolve(import.meta.dirname, '../../packages/archipelago/bin/archipelago-gateway.js');
const secret = (tag: string) => `${tag}${randomBytes(12).toString('hex')}`;
const KEY = secret('key');
const FILE_TOKEN = secret('AUTH_tkfile');
const ENV_KEY = secret('envkey');
const ENV_TOKEN = secret('AUTH_tkenv');
const SECRETS = [KEY, FILE_TOKEN, ENV_KEY, ENV_TOKEN];

let dir: string;
let authFile: string;
let gw: Started;

interface Started {
  proc: ChildProcess;
  url: string;
  stderr: () => string;
  stop: () => Promise<number | null>;
}

/** Starts `archipelago-gateway ARGS` on its own data directory; resolves once it listens. */
function startGateway(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Started> {
  const proc = spawn(process.execPath, [GATEWAY, '--port', '0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let out = '';
  let err = '';
  proc.stderr!.on('data', (d) => {
    err += d;
  });
  return new Promise((resolveStart, reject) => {
    proc.stdout!.on('data', (d) => {
      out += d;
      const m = /listening on (\S+)/.exec(out);
      if (m)
        resolveStart({
          proc,
          url: m[1]!,
          stderr: () => err,
          stop: () =>
            new Promise((r) => {
              if (proc.exitCode !== null) return r(proc.exitCode);
              proc.once('exit', (code) => r(code));
              proc.kill('SIGTERM');
            }),
        });
    });
    proc.once('exit', (code) => reject(new Error(`gateway exited with ${code}: ${err}`)));
  });
}

/** `pid` and every process descending from it. */
function processTree(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'latin1');
      parent.set(Number(e), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone meanwhile
    }
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i++)
    for (const [p, pp] of parent) if (pp === tree[i] && !tree.includes(p)) tree.push(p);
  return tree;
}

/** The command lines of the gateway's processes, as any local user reads them. */
function commandLines(pid: number): string[] {
  return processTree(pid).map((p) => readFileSync(`/proc/${p}/cmdline`, 'latin1'));
}

/** Sends `head` and `body` on a raw socket, then stalls; resolves what came back and when it closed. */
const stall = (url: string, head: string, body = Buffer.alloc(0)) =>
  rawExchange(
    url,
    (s) => {
      s.write(head);
      if (body.length) s.write(body);
    },
    8000,
  );

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'archip-gw-proc-'));
  authFile = join(dir, 'gateway.auth');
  writeFileSync(
    authFile,
    `# users and tokens of the test gateway\nuser test test:tester ${KEY}\n\ntoken ${FILE_TOKEN} test\n`,
  );
  chmodSync(authFile, 0o600);
  gw = await startGateway(
    [
      '--data',
      join(dir, 'data'),
      '--auth-file',
      authFile,
      '--token-lifetime',
      '1',
      '--headers-timeout',
      '1',
      '--body-timeout',
      '1',
    ],
    { ARCHIPELAGO_GATEWAY_USERS: `env,env:user,${ENV_KEY}`, ARCHIPELAGO_GATEWAY_TOKENS: `${ENV_TOKEN},env` },
  );
  expect((await curl(['-X', 'PUT', '-H', `X-Auth-Token: ${FILE_TOKEN}`, `${gw.url}/test/c`])).status).toBe(
    201,
  );
});

afterAll(async () => {
  if (gw) expect(await gw.stop()).toBe(0);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('gateway process: keys stay off the command line', () => {
  it('takes users and tokens from an auth file and the environment; no process shows them', async () => {
    for (const [user, key, acct] of [
      ['test:tester', KEY, 'test'],
      ['env:user', ENV_KEY, 'env'],
    ] as const) {
      const r = await curl(['-H', `X-Auth-User: ${user}`, '-H', `X-Auth-Key: ${key}`, `${gw.url}/auth/v1.0`]);
      expect(r.status, user).toBe(200);
      expect(r.headers['x-storage-url']).toBe(`${gw.url}/${acct}`);
    }
    expect((await curl(['-I', '-H', `X-Auth-Token: ${ENV_TOKEN}`, `${gw.url}/env`])).status).toBe(204);
    const lines = commandLines(gw.proc.pid!);
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) for (const s of SECRETS) expect(line).not.toContain(s);
    expect(lines[0]).toContain('--auth-file');
  });

  it('refuses an auth file others can read, naming the fix', () => {
    const loose = join(dir, 'loose.auth');
    writeFileSync(loose, `user test test:tester ${KEY}\n`);
    chmodSync(loose, 0o644);
    const r = spawnSync(process.execPath, [GATEWAY, '--data', join(dir, 'data'), '--auth-file', loose], {
      encoding: 'utf8',
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(
      `archipelago: EINVAL: auth file ${loose} is accessible by others (mode 0644): it holds keys; ` +
        `chmod 600 ${loose} (or 640, group archipelago)\n`,
    );
  });

  it('warns when a key still comes on the command line, and hides it from ps', async () => {
    const key = secret('argvkey');
    const token = secret('AUTH_tkargv');
    const g = await startGateway([
      '--data',
      join(dir, 'data2'),
      '--user',
      `a,a:u,${key}`,
      `--token=${token},a`,
    ]);
    try {
      expect(g.stderr()).toMatch(
        /warning: --user\/--token put keys on the command line.*use --auth-file FILE/,
      );
      for (const line of commandLines(g.proc.pid!)) {
        expect(line).not.toContain(key);
        expect(line).not.toContain(token);
      }
      const r = await curl(['-H', 'X-Auth-User: a:u', '-H', `X-Auth-Key: ${key}`, `${g.url}/auth/v1.0`]);
      expect(r.status).toBe(200);
    } finally {
      expect(await g.stop()).toBe(0);
    }
  });
});

describe('gateway process: tokens expire as X-Auth-Token-Expires says', () => {
  it('answers 401 past the lifetime; a new login gives a new token', async () => {
    const login = () =>
      curl(['-H', 'X-Auth-User: test:tester', '-H', `X-Auth-Key: ${KEY}`, `${gw.url}/auth/v1.0`]);
    const first = await login();
    expect(first.headers['x-auth-token-expires']).toBe('1');
    const token = first.headers['x-auth-token']!;
    const head = (t: string) => curl(['-I', '-H', `X-Auth-Token: ${t}`, `${gw.url}/test/c`]);
    expect((await head(token)).status).toBe(204);
    await new Promise((r) => setTimeout(r, 1100));
    const expired = await curl(['-H', `X-Auth-Token: ${token}`, `${gw.url}/test/c`]);
    expect(expired.status).toBe(401);
    expect(expired.body.toString()).toMatch(/expired/);
    const again = await login();
    expect(again.status).toBe(200);
    expect(again.headers['x-auth-token']).not.toBe(token);
    expect((await head(again.headers['x-auth-token']!)).status).toBe(204);
    // Pre-shared tokens are configuration: they do not expire.
    expect((await head(FILE_TOKEN)).status).toBe(204);
  });
});

describe('gateway process: slow requests are cut (slowloris)', () => {
  const put = (name: string, length: number, extra = '') =>
    `PUT /test/c/${name} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: ${FILE_TOKEN}\r\nContent-Length: ${length}\r\n${extra}\r\n`;
  const exists = async (name: string) =>
    (await curl(['-I', '-H', `X-Auth-Token: ${FILE_TOKEN}`, `${gw.url}/test/c/${name}`])).status;

  it('answers 408 and closes when a body stalls past --body-timeout; nothing is stored', async () => {
    const r = await stall(gw.url, put('stalled', 8 << 20), randomBytes(1536 * 1024));
    expect(r.answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(r.answer).toMatch(/stalled/);
    expect(r.ms).toBeGreaterThan(900);
    expect(r.ms).toBeLessThan(3000);
    expect(await exists('stalled')).toBe(404);
    const list = await curl(['-H', `X-Auth-Token: ${FILE_TOKEN}`, `${gw.url}/test/c`]);
    expect(list.status).toBe(204);
  });

  it('answers 408 and closes when a request head stalls past --headers-timeout', async () => {
    const r = await stall(gw.url, `PUT /test/c/head HTTP/1.1\r\nHost: x\r\n`);
    expect(r.answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(r.ms).toBeGreaterThan(900);
    expect(r.ms).toBeLessThan(3000);
  });

  it('lets a body that pauses less than the timeout finish', async () => {
    // Four pauses of 300 ms: the body takes longer than the timeout, no pause does.
    const data = randomBytes(4000);
    const { answer } = await rawExchange(gw.url, async (s) => {
      s.write(put('paced', data.length, 'Connection: close\r\n'));
      for (let i = 0; i < 4; i++) {
        await new Promise((r) => setTimeout(r, 300));
        s.write(data.subarray(i * 1000, (i + 1) * 1000));
      }
    });
    expect(answer).toMatch(/^HTTP\/1\.1 201 /);
    expect(await exists('paced')).toBe(200);
  });
});
