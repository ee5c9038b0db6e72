/**
 * Several hosts on one machine, for the tests that need two of them (fencing, lock take-over,
 * migration): each host is a network namespace (`ip netns`) with a UTS namespace of its own, so
 * `hostname` (and a lock record's `host`) differs per host while the kernel boot id is shared; its
 * own configuration file and run directory; its end of a veth pair on a bridge in the root
 * namespace. All hosts of a set share the file blocker's `blocks` and `maps` directories (the
 * "shared filesystem") and, with `ceph`, a Ceph cluster that listens on the bridge's address.
 *
 *   root namespace: bridge archh<N> 10.213.<N>.1/24 (the set's Ceph cluster listens here)
 *     ├── veth archh<N>v0 ── eth0 10.213.<N>.2 in netns archh<N>-<name0>, hostname <name0>
 *     └── veth archh<N>v1 ── eth0 10.213.<N>.3 in netns archh<N>-<name1>, hostname <name1>
 *
 * Hosts reach each other and the root side (10.213.<N>.1), nothing else: no default route, no
 * forwarding. Traffic stays on loopback and these addresses.
 *
 * <N> (1..254) is allocated per set, so sets of concurrent test files (or runs) never meet.
 * A set's state lives in /run/archip-hosts/<N>/ (owner pid and start time, the UTS namespace
 * files); allocation and the cleanup of leftovers run under one flock. `destroy()` kills every
 * process of each host, stops the set's cluster and removes the namespaces, links, segments and
 * directories, whatever state a failed test left; a set whose owner died (a crashed run) is removed
 * by the next `createHosts` (or `cleanupLeftovers()`), found by the name prefix `archh`.
 *
 * Needs root, iproute2 and util-linux (nsenter, unshare, flock); `hostsUnavailable()` says why
 * not, for a skip.
 */
import { type ChildProcess, execFile, execFileSync, type SpawnOptions, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { processStart } from '../../packages/blocker/src/holder.js';
import type { Blocker } from '../../packages/blocker/src/index.js';
import { FileBlocker } from '../../packages/blocker-file/src/index.js';
import { ENV, type Result, ROOT, sh, VLMC } from './vlmc.js';

const run = promisify(execFile);

/** Where the sets' state lives (tmpfs: gone after a reboot, as the namespaces are). */
export const STATE_DIR = '/run/archip-hosts';
/** Every namespace, link and segment of a set is named `archh<N>…`. */
export const NAME_PREFIX = 'archh';
export const ARCHIPELAGO = join(ROOT, 'packages/archipelago/bin/archipelago.js');
const CEPH_SCRIPT = join(ROOT, 'scripts/ceph-cluster.sh');
const SUBNET = '10.213';
const MAX_HOSTS = 16;

export type BlockerKind = 'file' | 'rados';
/** Configuration keys by section, e.g. `{ mapperd: { lease_timeout: 3 } }`. */
export type ConfigSections = Record<string, Record<string, string | number | boolean>>;

export interface HostsOptions {
  /** The blocker of each host's default configuration (`host.conf`): 'file' (default) or 'rados'. */
  blocker?: BlockerKind;
  /**
   * Start a Ceph cluster for the set, listening on the bridge address, and write each host's
   * RADOS configuration (`host.confs.rados`). Implied by `blocker: 'rados'`. Costs ~10 s.
   */
  ceph?: boolean;
  /** Keys set in every host configuration (both blockers), over the defaults; or per host name. */
  config?: ConfigSections | ((name: string) => ConfigSections);
}

export interface RunOptions {
  /** Extra environment (over the host's: ENV with ARCHIPELAGO_CONF of the host). */
  env?: NodeJS.ProcessEnv;
  /** The configuration ARCHIPELAGO_CONF names: a blocker kind of the host, or a path. */
  conf?: BlockerKind | string;
  timeout?: number;
  cwd?: string;
}

export interface Host {
  /** Its name, which is also its hostname inside. */
  readonly name: string;
  readonly index: number;
  /** The `ip netns` name: `archh<N>-<name>`. */
  readonly netns: string;
  /** Its address on the set's bridge (eth0 inside). */
  readonly addr: string;
  /** The root namespace's end of its veth pair (down: the host is cut off). */
  readonly link: string;
  /** Its own directory: configuration files and the run directory. */
  readonly dir: string;
  /** `[ARCHIPELAGO] RUN_DIR` of its configurations. */
  readonly runDir: string;
  /** Its XSEG segment name (unique per host: /dev/shm is shared). */
  readonly segment: string;
  /** Its default configuration (the set's `blocker`). */
  readonly conf: string;
  /** Its configuration per blocker (`rados` only with a cluster). */
  readonly confs: { file: string; rados?: string };
  /** The environment its commands get: ENV, ARCHIPELAGO_CONF, then `extra`. */
  env(extra?: NodeJS.ProcessEnv, conf?: BlockerKind | string): NodeJS.ProcessEnv;
  /** The argv prefix that runs a command in this host: `nsenter --net=… --uts=… --`. */
  readonly enter: readonly string[];
  /** Runs `cmd args` inside this host and waits for it (never rejects: see `code`). */
  run(cmd: string, args?: string[], opts?: RunOptions): Promise<Result>;
  /** Starts `cmd args` inside this host; the child's pid is the command's own (nsenter execs it). */
  spawn(cmd: string, args?: string[], opts?: SpawnOptions & { conf?: BlockerKind | string }): ChildProcess;
  /** Runs the built `vlmc` inside this host; `--json` output is parsed into `json`. */
  vlmc(...args: string[]): Promise<Result & { json: unknown }>;
  /** Runs `vlmc` and rejects with its stderr when it fails; resolves to its trimmed stdout. */
  ok(...args: string[]): Promise<string>;
  /** Runs the built `archipelago` tool inside this host. */
  archipelago(...args: string[]): Promise<Result & { json: unknown }>;
  /** The pids of every process in this host. */
  pids(): Promise<number[]>;
  /** Sends `signal` (default SIGKILL: the host crashes) to every process in this host; their pids. */
  kill(signal?: NodeJS.Signals): Promise<number[]>;
  /** Connects (true) or cuts off (false) this host from the bridge: the others and the cluster. */
  setLink(up: boolean): Promise<void>;
}

export interface Hosts {
  /** The set's number N: its subnet is 10.213.N.0/24, its names start `archh<N>`. */
  readonly id: number;
  /** The set's directory (shared blocker directories, hosts' directories, the cluster). */
  readonly dir: string;
  /** The file blocker's directories every host's `[blockerb]`/`[blockerm]` names. */
  readonly shared: { blocks: string; maps: string };
  /** The bridge's address in the root namespace (where the cluster listens). */
  readonly gateway: string;
  /** The bridge's name. */
  readonly bridge: string;
  readonly hosts: readonly Host[];
  /** The set's Ceph cluster (with `ceph` or `blocker: 'rados'`), reachable from every host and the root namespace. */
  readonly cluster: { dir: string; conf: string; addr: string } | null;
  /** The RADOS namespace every host's RADOS configuration uses (pools "blocks" and "maps"). */
  readonly radosNamespace: string;
  /** The host called `name`; throws for an unknown one. */
  host(name: string): Host;
  /** Removes everything of the set (idempotent). */
  destroy(): Promise<void>;
}

/** Why hosts cannot be created here (not root, no `ip netns`, no nsenter/unshare), or null. */
export async function hostsUnavailable(): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'two-host tests need root (network and UTS namespaces)';
  for (const bin of ['ip', 'nsenter', 'unshare', 'flock']) {
    if (
      !(await run('sh', ['-c', `command -v ${bin}`]).then(
        () => true,
        () => false,
      ))
    )
      return `${bin} is missing: install iproute2 and util-linux (scripts/test.sh does)`;
  }
  const probe = `${NAME_PREFIX}probe${process.pid}`;
  try {
    await run('ip', ['netns', 'add', probe]);
  } catch (e) {
    return `"ip netns add" fails here: ${(e as { stderr?: string }).stderr?.trim() || String(e)}`;
  } finally {
    await run('ip', ['netns', 'del', probe]).catch(() => undefined);
  }
  // A UTS namespace kept by a bind mount on a file, as createHosts keeps each host's.
  const uts = join(STATE_DIR, `.probe-${process.pid}.uts`);
  try {
    await mkdir(STATE_DIR, { recursive: true });
    await writeFile(uts, '');
    await run('unshare', [`--uts=${uts}`, 'hostname', 'archh-probe']);
  } catch (e) {
    return `"unshare --uts=<file>" fails here: ${(e as { stderr?: string }).stderr?.trim() || String(e)}`;
  } finally {
    await run('umount', [uts]).catch(() => undefined);
    await rm(uts, { force: true });
  }
  return null;
}

interface Owner {
  pid: number;
  start: string;
  dir: string;
}

/**
 * Removes set N by its names, whatever state it is in: kills the processes of its namespaces,
 * stops its cluster, deletes namespaces, links, UTS files, segments, its directory, its state.
 * Arguments: N, the set's directory ('' when unknown), STATE_DIR, the cluster script, and the
 * owner.json the set must still have ('' for any: a dead set, removed under the state lock).
 */
const TEARDOWN = `
set +e
n=$1 dir=$2 state=$3/$1 ceph=$4 expect=$5
if [ -n "$expect" ] && [ "$(cat "$state/owner.json" 2>/dev/null)" != "$expect" ]; then exit 0; fi
nss=$(ip netns list | awk '{print $1}' | grep -E "^${NAME_PREFIX}$n-")
for ns in $nss; do pids=$(ip netns pids "$ns"); [ -n "$pids" ] && kill -9 $pids; done
for _ in $(seq 1 50); do
  left=; for ns in $nss; do left="$left$(ip netns pids "$ns")"; done
  [ -z "$left" ] && break; sleep 0.1
done
case "$dir" in */archip-hosts-*) ;; *) dir= ;; esac # only ever a set's own temp directory
[ -n "$dir" ] && [ -f "$dir/ceph/ceph.conf" ] && bash "$ceph" purge "$dir/ceph" >/dev/null 2>&1
for ns in $nss; do ip netns del "$ns"; done
for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^${NAME_PREFIX}$n(v[0-9]+)?$"); do
  ip link del "$l"
done
for f in "$state"/*.uts; do [ -e "$f" ] && umount "$f" 2>/dev/null; done
rm -f /dev/shm/${NAME_PREFIX}$n-*
[ -n "$dir" ] && rm -rf "$dir"
rm -rf "$state"
exit 0
`;

/** The teardown of a dead set, by a caller that holds the state lock. */
async function teardown(n: number, dir: string): Promise<void> {
  await run('bash', ['-c', TEARDOWN, 'teardown', String(n), dir, STATE_DIR, CEPH_SCRIPT, ''], {
    timeout: 120_000,
  });
}

/**
 * The owner's teardown of its own set: under the state lock, and only while the set is still its
 * own (no one removed it and reused N meanwhile), so it never touches another set.
 */
function ownTeardownArgs(n: number, dir: string, owner: string): string[] {
  const lock = join(STATE_DIR, '.lock');
  return [
    '-w',
    '120',
    lock,
    'bash',
    '-c',
    TEARDOWN,
    'teardown',
    String(n),
    dir,
    STATE_DIR,
    CEPH_SCRIPT,
    owner,
  ];
}

async function readOwner(n: number): Promise<Owner | null> {
  try {
    return JSON.parse(await readFile(join(STATE_DIR, String(n), 'owner.json'), 'utf8')) as Owner;
  } catch {
    return null;
  }
}

const ownerAlive = (o: Owner | null) => o !== null && processStart(o.pid) === o.start;

/** Runs `fn` holding the machine-wide lock of STATE_DIR (flock; released if this process dies). */
async function withStateLock<T>(fn: () => Promise<T>): Promise<T> {
  await mkdir(STATE_DIR, { recursive: true });
  // flock holds the lock while `cat` runs; cat ends when we close its stdin, or when we die.
  const holder = spawn(
    'flock',
    ['-w', '120', join(STATE_DIR, '.lock'), 'sh', '-c', 'echo locked; exec cat'],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  try {
    await new Promise<void>((resolve, reject) => {
      holder.stdout?.once('data', () => resolve());
      holder.once('exit', (code) => reject(new Error(`flock ${STATE_DIR}/.lock failed (exit ${code})`)));
      holder.once('error', reject);
    });
    return await fn();
  } finally {
    holder.stdin?.end();
  }
}

/** The set numbers that have state or resources (namespaces, links) on this machine. */
async function knownSets(): Promise<Set<number>> {
  const found = new Set<number>();
  const re = new RegExp(`^${NAME_PREFIX}(\\d+)(?:v\\d+|-.*)?$`);
  const add = (name: string) => {
    const m = re.exec(name);
    if (m) found.add(Number(m[1]));
  };
  const netns = await run('ip', ['netns', 'list']).then(
    (r) => r.stdout,
    () => '',
  );
  for (const line of netns.split('\n')) add(line.split(' ')[0] ?? '');
  const links = await run('ip', ['-o', 'link', 'show']).then(
    (r) => r.stdout,
    () => '',
  );
  for (const line of links.split('\n')) add((line.split(': ')[1] ?? '').split('@')[0] ?? '');
  for (const e of await readdir(STATE_DIR).catch(() => [] as string[]))
    if (/^\d+$/.test(e)) found.add(Number(e));
  return found;
}

async function removeDeadSets(): Promise<number[]> {
  const removed: number[] = [];
  for (const n of await knownSets()) {
    const owner = await readOwner(n);
    if (ownerAlive(owner)) continue;
    await teardown(n, owner?.dir ?? '');
    removed.push(n);
  }
  return removed;
}

/** Removes every set whose owner process is gone (a crashed run); the numbers removed. */
export function cleanupLeftovers(): Promise<number[]> {
  return withStateLock(removeDeadSets);
}

/** Sets of this process not destroyed yet: removed at exit (synchronously) as a last resort. */
const live = new Map<number, { dir: string; owner: string }>();

/** A free set number: no state, no names, no address of its subnet in use on this machine. */
async function allocate(dir: string): Promise<number> {
  const taken = await knownSets();
  const used = [
    (await run('ip', ['-4', '-o', 'addr', 'show'])).stdout,
    (await run('ip', ['-4', 'route', 'show', 'table', 'all'])).stdout,
  ].join('\n');
  for (let n = 1; n <= 254; n++) {
    if (taken.has(n) || used.includes(`${SUBNET}.${n}.`)) continue;
    const state = join(STATE_DIR, String(n));
    await mkdir(state);
    const owner: Owner = { pid: process.pid, start: processStart(process.pid) ?? '0', dir };
    await writeFile(join(state, 'owner.json'), JSON.stringify(owner));
    live.set(n, { dir, owner: JSON.stringify(owner) });
    return n;
  }
  throw new Error(`no free subnet ${SUBNET}.N.0/24 for a set of hosts (254 in use?)`);
}

let exitHook = false;
function onExit(): void {
  for (const [n, { dir, owner }] of live) {
    try {
      execFileSync('flock', ownTeardownArgs(n, dir, owner), { stdio: 'ignore', timeout: 130_000 });
    } catch {
      // the next createHosts removes it
    }
  }
}

function iniOf(sections: ConfigSections): string {
  return Object.entries(sections)
    .map(
      ([name, keys]) =>
        `[${name}]\n${Object.entries(keys)
          .map(([k, v]) => `${k} = ${v}\n`)
          .join('')}`,
    )
    .join('\n');
}

/** Merges `over` into `base`, section by section. */
function merged(base: ConfigSections, over: ConfigSections): ConfigSections {
  const out: ConfigSections = { ...base };
  for (const [s, keys] of Object.entries(over)) out[s] = { ...out[s], ...keys };
  return out;
}

/**
 * A host's configuration: the daemons' sections too (small segment, its own name), so
 * `archipelago start` works inside the host; `vlmc` uses the embedded wiring until then.
 */
function hostConfig(
  runDir: string,
  segment: string,
  blockers: Record<'blockerb' | 'blockerm', ConfigSections[string]>,
): ConfigSections {
  return {
    // The daemons stay root: the host's directories are not reachable by another account.
    ARCHIPELAGO: { RUN_DIR: runDir, USER: 'root', GROUP: 'root' },
    XSEG: {
      SEGMENT_PORTS: 128,
      SEGMENT_DYNPORTS: 64,
      SEGMENT_SIZE: 400,
      VTOOL_START: 100,
      VTOOL_END: 110,
      segment_name: segment,
    },
    PEERS: { ROLES: 'blockerb blockerm mapperd vlmcd' },
    blockerb: { portno_start: 10, portno_end: 10, nr_ops: 16, ...blockers.blockerb },
    blockerm: { portno_start: 12, portno_end: 12, nr_ops: 16, ...blockers.blockerm },
    mapperd: {
      type: 'mapperd',
      portno_start: 11,
      portno_end: 11,
      nr_ops: 16,
      blockerb_port: 10,
      blockerm_port: 12,
      lock_timeout: 5,
    },
    vlmcd: { type: 'vlmcd', portno_start: 20, portno_end: 30, nr_ops: 16, blocker_port: 10, mapper_port: 11 },
  };
}

/** `r` and, when `args` asked for `--json`, its stdout parsed (undefined if it is not JSON). */
function withJson<T extends Result>(r: T, args: string[]): T & { json: unknown } {
  if (!args.includes('--json')) return { ...r, json: undefined };
  try {
    return { ...r, json: JSON.parse(r.stdout) as unknown };
  } catch {
    return { ...r, json: undefined };
  }
}

/**
 * Creates hosts `names` (each also its hostname: lowercase letters, digits and '-', not this
 * machine's hostname) on one machine; see the file comment. Removes dead sets of crashed runs
 * first. On any failure everything made so far is removed again.
 */
export async function createHosts(names: string[], opts: HostsOptions = {}): Promise<Hosts> {
  if (names.length === 0 || names.length > MAX_HOSTS) throw new Error(`createHosts: 1 to ${MAX_HOSTS} hosts`);
  for (const name of names) {
    if (!/^[a-z][a-z0-9-]{0,30}$/.test(name))
      throw new Error(
        `createHosts: "${name}": a host name is lowercase letters, digits and '-' (at most 31)`,
      );
    if (name === hostname()) throw new Error(`createHosts: "${name}" is this machine's own hostname`);
  }
  if (new Set(names).size !== names.length)
    throw new Error(`createHosts: duplicate names in ${names.join(', ')}`);
  const reason = await hostsUnavailable();
  if (reason) throw new Error(`createHosts: ${reason}`);

  const dir = await mkdtemp(join(tmpdir(), 'archip-hosts-'));
  const n = await withStateLock(async () => {
    await removeDeadSets();
    return allocate(dir);
  }).catch(async (e) => {
    await rm(dir, { recursive: true, force: true });
    throw e;
  });
  if (!exitHook) {
    exitHook = true;
    process.once('exit', onExit);
  }
  const destroy = async () => {
    const mine = live.get(n);
    if (!mine) return;
    await run('flock', ownTeardownArgs(n, dir, mine.owner), { timeout: 130_000 });
    live.delete(n);
  };
  try {
    return await build(n, dir, names, opts, destroy);
  } catch (e) {
    await destroy();
    throw e;
  }
}

async function ip(...args: string[]): Promise<void> {
  try {
    await run('ip', args);
  } catch (e) {
    throw new Error(`ip ${args.join(' ')}: ${(e as { stderr?: string }).stderr?.trim() || String(e)}`);
  }
}

async function build(
  n: number,
  dir: string,
  names: string[],
  opts: HostsOptions,
  destroy: () => Promise<void>,
): Promise<Hosts> {
  const bridge = `${NAME_PREFIX}${n}`;
  const gateway = `${SUBNET}.${n}.1`;
  await ip('link', 'add', bridge, 'type', 'bridge');
  await ip('addr', 'add', `${gateway}/24`, 'dev', bridge);
  await ip('link', 'set', bridge, 'up');

  const shared = { blocks: join(dir, 'shared', 'blocks'), maps: join(dir, 'shared', 'maps') };
  await mkdir(shared.blocks, { recursive: true });
  await mkdir(shared.maps, { recursive: true });

  const withCeph = opts.ceph === true || opts.blocker === 'rados';
  let cluster: Hosts['cluster'] = null;
  const radosNamespace = `hosts-${n}-${process.pid}-${Date.now().toString(36)}`;
  if (withCeph) {
    const { requireCephTools, startClusterIn } = await import('../../packages/blocker-rados/test/cluster.js');
    await requireCephTools();
    const c = await startClusterIn(join(dir, 'ceph'), { publicAddr: gateway });
    cluster = { dir: c.dir, conf: c.conf, addr: gateway };
  }

  const hosts: Host[] = [];
  for (const [i, name] of names.entries()) {
    const netns = `${NAME_PREFIX}${n}-${name}`;
    const link = `${NAME_PREFIX}${n}v${i}`;
    const addr = `${SUBNET}.${n}.${i + 2}`;
    const uts = join(STATE_DIR, String(n), `${name}.uts`);
    await ip('netns', 'add', netns);
    await ip('link', 'add', link, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns);
    await ip('link', 'set', link, 'master', bridge, 'up');
    await ip('-n', netns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0');
    await ip('-n', netns, 'link', 'set', 'eth0', 'up');
    await ip('-n', netns, 'link', 'set', 'lo', 'up');
    // A UTS namespace kept by a bind mount on a file (as `ip netns` keeps network namespaces).
    await writeFile(uts, '');
    await run('unshare', [`--uts=${uts}`, 'hostname', name]);

    const hdir = join(dir, name);
    const runDir = join(hdir, 'run');
    await mkdir(runDir, { recursive: true });
    const segment = `${NAME_PREFIX}${n}-${name}`;
    const extra = typeof opts.config === 'function' ? opts.config(name) : (opts.config ?? {});
    const confs: { file: string; rados?: string } = { file: join(hdir, 'file.conf') };
    await writeFile(
      confs.file,
      iniOf(
        merged(
          hostConfig(runDir, segment, {
            blockerb: { type: 'file_blocker', archip_dir: shared.blocks },
            blockerm: { type: 'file_blocker', archip_dir: shared.maps },
          }),
          extra,
        ),
      ),
    );
    if (cluster) {
      const rados = (pool: string) => ({
        type: 'rados_blocker',
        pool,
        namespace: radosNamespace,
        ceph_conf: cluster.conf,
        connect_timeout: 10,
      });
      confs.rados = join(hdir, 'rados.conf');
      await writeFile(
        confs.rados,
        iniOf(
          merged(hostConfig(runDir, segment, { blockerb: rados('blocks'), blockerm: rados('maps') }), extra),
        ),
      );
    }
    const conf = opts.blocker === 'rados' ? (confs.rados as string) : confs.file;
    const enter = ['nsenter', `--net=/run/netns/${netns}`, `--uts=${uts}`, '--'] as const;
    const confPath = (c: BlockerKind | string | undefined): string => {
      if (c === undefined) return conf;
      if (c === 'file' || c === 'rados') {
        const p = confs[c];
        if (!p) throw new Error(`host ${name}: no ${c} configuration (createHosts without ceph)`);
        return p;
      }
      return c;
    };
    const env = (extraEnv: NodeJS.ProcessEnv = {}, c?: BlockerKind | string): NodeJS.ProcessEnv => ({
      ...ENV,
      ARCHIPELAGO_CONF: confPath(c),
      ...extraEnv,
    });
    const hostRun = (cmd: string, args: string[] = [], o: RunOptions = {}) =>
      sh(enter[0], [...enter.slice(1), cmd, ...args], {
        env: env(o.env, o.conf),
        ...(o.timeout !== undefined ? { timeout: o.timeout } : {}),
        ...(o.cwd !== undefined ? { cwd: o.cwd } : {}),
      });
    const pids = async (): Promise<number[]> => {
      const r = await run('ip', ['netns', 'pids', netns]).catch(() => ({ stdout: '' }));
      return r.stdout
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map(Number);
    };
    const host: Host = {
      name,
      index: i,
      netns,
      addr,
      link,
      dir: hdir,
      runDir,
      segment,
      conf,
      confs,
      enter,
      env,
      run: hostRun,
      spawn: (cmd, args = [], o = {}) => {
        const { conf: c, env: e, ...rest } = o;
        return spawn(enter[0], [...enter.slice(1), cmd, ...args], { ...rest, env: env(e, c) });
      },
      vlmc: async (...args) => withJson(await hostRun(process.execPath, [VLMC, ...args]), args),
      ok: async (...args) => {
        const r = await hostRun(process.execPath, [VLMC, ...args]);
        if (r.code !== 0)
          throw new Error(`[${name}] vlmc ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
        return r.stdout.trim();
      },
      archipelago: async (...args) => withJson(await hostRun(process.execPath, [ARCHIPELAGO, ...args]), args),
      pids,
      kill: async (signal = 'SIGKILL') => {
        const found = await pids();
        for (const pid of found) {
          try {
            process.kill(pid, signal);
          } catch {
            // gone already
          }
        }
        return found;
      },
      setLink: (up) => ip('link', 'set', link, up ? 'up' : 'down'),
    };
    hosts.push(host);
  }

  return {
    id: n,
    dir,
    shared,
    gateway,
    bridge,
    hosts,
    cluster,
    radosNamespace,
    host(name) {
      const h = hosts.find((x) => x.name === name);
      if (!h) throw new Error(`no host ${name} (hosts: ${names.join(', ')})`);
      return h;
    },
    destroy,
  };
}

/** A blocker over the set's maps store, in the root namespace: who holds a lock (tests' observer). */
export async function openLockObserver(kind: BlockerKind, set: Hosts): Promise<Blocker> {
  if (kind === 'file') return new FileBlocker({ dir: set.shared.maps, identity: 'observer_1' });
  const { RadosBlocker } = await import('../../packages/blocker-rados/src/index.js');
  return RadosBlocker.open({
    cephConf: set.cluster?.conf as string,
    pool: 'maps',
    namespace: set.radosNamespace,
    identity: 'observer_1',
  });
}
