/**
 * `[ARCHIPELAGO] USER`, `GROUP`, `UMASK` and the per-peer `umask`, as an operator checks them: one
 * `archipelago start` (as root) with USER/GROUP naming a test account, then the peers' ids from
 * /proc, the mode of everything they and the commands created, a member of GROUP using the
 * segment and reading data, and anybody else refused. Also the gateway's switch and `nr_threads`.
 * Needs root (it makes the test accounts, and only root can switch); the built tools (pnpm build).
 */
import { type SpawnSyncReturns, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeConfig, type TestConfig } from '../daemons/helpers.js';

const ROOT = resolve(import.meta.dirname, '../..');
const TOOL = join(ROOT, 'packages/archipelago/bin/archipelago.js');
const VLMC = join(ROOT, 'packages/cli/bin/vlmc.js');
const XSEG = join(ROOT, 'packages/tools-xseg/bin/xseg.js');
const USER = 'archip-e2e';
const GROUP = 'archip-e2e';
/** A member of GROUP by its supplementary groups only (primary group nogroup). */
const MEMBER = 'archip-e2e-m';
const ROLES = ['blockerb', 'blockerm', 'mapperd', 'vlmcd'] as const;
const MARKER = 'guest-secret';

const isRoot = process.getuid?.() === 0;
// The spawned tools get the libuv default thread pool unless a section says nr_threads.
const { UV_THREADPOOL_SIZE: _pool, ...ENV0 } = process.env;
const ENV = { ...ENV0, PATH: `/usr/bin:/usr/sbin:/bin:/sbin:${process.env.PATH ?? ''}` };

const sh = (cmd: string, args: string[], env: NodeJS.ProcessEnv = ENV): SpawnSyncReturns<string> =>
  spawnSync(cmd, args, { encoding: 'utf8', env, timeout: 30_000 });

/** Runs `cmd` as `user` (real and effective ids, its groups from the account databases). */
const asUser = (user: string, group: string, cmd: string, args: string[]) =>
  sh('setpriv', [`--reuid=${user}`, `--regid=${group}`, '--init-groups', cmd, ...args], {
    ...ENV,
    HOME: '/nonexistent',
  });

const idOf = (db: 'passwd' | 'group', name: string) => Number(sh('getent', [db, name]).stdout.split(':')[2]);

function ensureAccounts(): void {
  if (sh('getent', ['group', GROUP]).status !== 0) sh('groupadd', ['--system', GROUP]);
  if (sh('getent', ['passwd', USER]).status !== 0)
    sh('useradd', ['--system', '--gid', GROUP, '--no-create-home', '--shell', '/usr/sbin/nologin', USER]);
  if (sh('getent', ['passwd', MEMBER]).status !== 0)
    sh('useradd', ['--system', '--gid', 'nogroup', '--groups', GROUP, '--no-create-home', MEMBER]);
  for (const [db, n] of [
    ['group', GROUP],
    ['passwd', USER],
    ['passwd', MEMBER],
  ] as const)
    if (sh('getent', [db, n]).status !== 0) throw new Error(`could not create the test account ${n}`);
}

/** `/proc/<pid>/status` fields. */
function status(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

/** Every path under `dir` (itself included), depth first. */
function walk(dir: string): string[] {
  const out = [dir];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

/**
 * The daemons' test configuration (test-e2e/daemons), with USER/GROUP naming `user`, a blocker's
 * `nr_threads`, a `lock_dir` and a per-peer `umask`; its directory searchable by the accounts,
 * its run directory left to `archipelago start` to make.
 */
function privConfig(user = USER): TestConfig {
  const c = makeConfig();
  chmodSync(c.dir, 0o711);
  rmSync(c.runDir, { recursive: true });
  const text = readFileSync(c.conf, 'utf8')
    .replace('USER = root\nGROUP = root', `USER = ${user}\nGROUP = ${GROUP}\nUMASK = 0o007`)
    .replace('[blockerb]\n', '[blockerb]\nnr_threads = 12\n')
    .replace('[blockerm]\n', '[blockerm]\nlock_dir = locks\n')
    .replace('[mapperd]\n', '[mapperd]\numask = 0o027\n');
  writeFileSync(c.conf, text, { mode: 0o644 });
  return c;
}

let cfg: TestConfig;
let dir = '';
let conf = '';
let segment = '';
let uid = -1;
let gid = -1;
const pids: Record<string, number> = {};

describe.skipIf(!isRoot)('USER, GROUP, UMASK: the daemons run as the configured account', () => {
  beforeAll(() => {
    if (!existsSync(join(ROOT, 'packages/peer/dist/main.js')))
      throw new Error('not built: run "pnpm build" first');
    ensureAccounts();
    uid = idOf('passwd', USER);
    gid = idOf('group', GROUP);
    cfg = privConfig();
    ({ dir, conf, segment } = cfg);
    const started = sh(process.execPath, [TOOL, '-c', conf, 'start']);
    expect(started.status, started.stderr).toBe(0);
    for (const r of ROLES) pids[r] = Number(readFileSync(join(dir, 'run', `${r}.pid`), 'utf8'));
  });

  afterAll(() => {
    if (!cfg) return;
    cfg.tool('stop', '-f');
    cfg.cleanup();
  });

  it('every peer runs as USER and GROUP (real, effective, saved, fs ids; groups of USER), with its umask', () => {
    for (const r of ROLES) {
      const st = status(pids[r] as number);
      expect(st.Uid, r).toBe(`${uid}\t${uid}\t${uid}\t${uid}`);
      expect(st.Gid, r).toBe(`${gid}\t${gid}\t${gid}\t${gid}`);
      expect(st.Groups?.split(/\s+/), r).toEqual([String(gid)]);
      // UMASK, or the section's umask (mapperd says 0o027).
      expect(st.Umask, r).toBe(r === 'mapperd' ? '0027' : '0007');
    }
  });

  it("nr_threads sizes the blocker peer's thread pool", () => {
    const pool = (pid: number) =>
      readFileSync(`/proc/${pid}/environ`, 'utf8')
        .split('\0')
        .find((e) => e.startsWith('UV_THREADPOOL_SIZE='))
        ?.slice('UV_THREADPOOL_SIZE='.length);
    expect(pool(pids.blockerb as number)).toBe('12');
    // Without nr_threads a peer keeps the pool of the tool that started it.
    const other = Number(pool(pids.blockerm as number) ?? 4);
    expect(other).not.toBe(12);
    // Same program, same work so far: the difference in threads is the difference in pool size.
    const threads = (pid: number) => readdirSync(`/proc/${pid}/task`).length;
    expect(threads(pids.blockerb as number) - threads(pids.blockerm as number)).toBe(12 - other);
  });

  it('a member of GROUP uses the segment and the volumes; anybody else is refused', () => {
    const spec = cfg.spec;
    // Data written by root (a vlmc command through the daemons) and by the member.
    const src = join(dir, 'run', 'src.raw');
    writeFileSync(src, Buffer.from(MARKER.repeat(1000)));
    const imp = sh(process.execPath, [VLMC, '-c', conf, 'import', src, 'v1']);
    expect(imp.status, imp.stderr).toBe(0);
    rmSync(src);
    const rep = asUser(MEMBER, 'nogroup', process.execPath, [XSEG, spec, 'report', '10']);
    expect(rep.status, rep.stderr).toBe(0);
    expect(rep.stdout).toMatch(new RegExp(`owner: pid ${pids.blockerb} \\(alive\\)`));
    const made = asUser(MEMBER, 'nogroup', process.execPath, [
      VLMC,
      '-c',
      conf,
      'create',
      'm1',
      '--size',
      '4M',
    ]);
    expect(made.status, made.stderr).toBe(0);
    const info = asUser(MEMBER, 'nogroup', process.execPath, [VLMC, '-c', conf, 'info', 'v1', '--json']);
    expect(info.status, info.stderr).toBe(0);
    expect(JSON.parse(info.stdout).size).toBe(MARKER.length * 1000);

    const object = walk(join(dir, 'blocks')).find(
      (p) => p.includes('v1_') && lstatSync(p).isFile(),
    ) as string;
    expect(object).toBeDefined();
    const member = asUser(MEMBER, 'nogroup', 'head', ['-c', '12', object]);
    expect([member.status, member.stdout]).toEqual([0, MARKER]);
    const nobody = sh('setpriv', [
      '--reuid=nobody',
      '--regid=nogroup',
      '--clear-groups',
      'head',
      '-c',
      '12',
      object,
    ]);
    expect(nobody.status).not.toBe(0);
    expect(nobody.stdout).toBe('');
    expect(nobody.stderr).toMatch(/Permission denied/);
    const join_ = sh(
      'setpriv',
      ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, XSEG, spec, 'report', '10'],
      {
        ...ENV,
        HOME: '/nonexistent',
      },
    );
    expect(join_.status).not.toBe(0);
    expect(join_.stderr).toMatch(/permission denied/);
  });

  it('the gateway switches to USER/GROUP once it listens, and serves', async () => {
    const p = spawn(process.execPath, [TOOL, 'gateway', '-c', conf, '--port', '0', '--token', 'tk,acct'], {
      env: ENV,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    p.stderr.on('data', (d) => {
      err += d;
    });
    try {
      const url = await new Promise<string>((ok, fail) => {
        let out = '';
        p.stdout.on('data', (d) => {
          out += d;
          const m = /listening on (\S+)/.exec(out);
          if (m) ok(m[1] as string);
        });
        p.once('exit', (code) => fail(new Error(`gateway exited with ${code}: ${err}`)));
      });
      const st = status(p.pid as number);
      expect(st.Uid).toBe(`${uid}\t${uid}\t${uid}\t${uid}`);
      expect(st.Gid).toBe(`${gid}\t${gid}\t${gid}\t${gid}`);
      const auth = { 'X-Auth-Token': 'tk' };
      expect((await fetch(`${url}/acct/c1`, { method: 'PUT', headers: auth })).status).toBe(201);
      const put = await fetch(`${url}/acct/c1/f1`, { method: 'PUT', headers: auth, body: MARKER });
      expect(put.status).toBe(201);
      expect(await (await fetch(`${url}/acct/c1/f1`, { headers: auth })).text()).toBe(MARKER);
    } finally {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await exited;
    }
  });

  it('everything created is user and group read-write, group GROUP, nothing for others', () => {
    const paths = [
      ...walk(dir).filter((p) => p !== dir && p !== conf),
      `/dev/shm/${segment}`,
      ...walk(`/dev/shm/${segment}.bell`),
    ];
    expect(paths.length).toBeGreaterThan(30);
    const bad: string[] = [];
    for (const p of paths) {
      const st = lstatSync(p);
      const mode = st.mode & 0o7777;
      const what = `${relative(dir, p)} ${mode.toString(8)} ${st.uid}:${st.gid}`;
      if (mode & 0o007) bad.push(`${what}: others have access`);
      if (st.gid !== gid) bad.push(`${what}: not group ${GROUP}`);
      // mapperd's umask 0o027 makes its own pidfile and log group-readable only.
      const own = /\/run\/mapperd\.(pid|log)$/.test(p);
      if ((mode & 0o060) !== (own ? 0o040 : 0o060)) bad.push(`${what}: not group read-write`);
      if (st.isDirectory() && (mode & 0o2070) !== 0o2070) bad.push(`${what}: directory not 2770`);
    }
    expect(bad).toEqual([]);
  });

  it('a USER or GROUP that does not exist is a clear start-up error, and nothing starts', () => {
    const other = privConfig('archip-no-such-user');
    try {
      const r = other.tool('start');
      expect(r.status).toBe(1);
      expect(r.stderr).toBe(
        `archipelago: EINVAL_CONFIG: ${other.conf}: [ARCHIPELAGO] USER = archip-no-such-user: no such user on this host; create it (as root: scripts/install.sh creates "archipelago", or "useradd --system archip-no-such-user"), or name an existing user\n`,
      );
      expect(existsSync(join(other.runDir, 'blockerb.pid'))).toBe(false);
      expect(existsSync(`/dev/shm/${other.segment}`)).toBe(false);
    } finally {
      mkdirSync(other.runDir, { recursive: true }); // cleanup() lists it
      other.cleanup();
    }
  });
});
