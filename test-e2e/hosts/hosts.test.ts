/**
 * The two-host harness itself (test-e2e/lib/hosts.ts): two network namespaces with their own
 * hostnames on one machine, sharing the file blocker's directories and a Ceph cluster on the
 * bridge. What the fencing and migration tests build on: hostnames differ, a lock taken on one
 * host names it on the other, both reach the cluster, NBD works inside a host, a host can be
 * cut off and crashed, and nothing is left behind. Skipped (saying why) where namespaces cannot be
 * made: not root, or no `ip netns`. Needs the built CLI (`pnpm run build`).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { processStart } from '../../packages/blocker/src/holder.js';
import {
  cleanupLeftovers,
  createHosts,
  type Host,
  type Hosts,
  hostsUnavailable,
  NAME_PREFIX,
  STATE_DIR,
} from '../lib/hosts.js';
import { ROOT, requireTool } from '../lib/vlmc.js';

const reason = await hostsUnavailable();
const suite = reason ? describe.skip : describe;

/** A one-line TCP exchange: `server` listens on its address, `client` connects and reads. */
const LISTEN = `const s=require('net').createServer(c=>{c.end(require('os').hostname());s.close()});
s.listen(+process.argv[2],process.argv[1],()=>console.log('listening'))`;
const CONNECT = `const c=require('net').connect(+process.argv[2],process.argv[1]);let d='';
c.on('data',b=>d+=b);c.on('end',()=>console.log(d));c.on('error',e=>{console.error(e.message);process.exit(1)})`;

suite(reason ? `two hosts on one machine (skipped: ${reason})` : 'two hosts on one machine', () => {
  let set: Hosts;
  let a: Host;
  let b: Host;

  beforeAll(async () => {
    if (!existsSync(join(ROOT, 'packages/cli/dist/bundle/vlmc.cjs')))
      throw new Error('packages/cli is not built: run "pnpm run build" first');
    requireTool('qemu-img', 'qemu-utils');
    set = await createHosts(['host-a', 'host-b'], { ceph: true, config: { mapperd: { lock_timeout: 2 } } });
    a = set.host('host-a');
    b = set.host('host-b');
  }, 120_000);

  afterAll(async () => {
    await set?.destroy();
  });

  it('each host has its own hostname, address, configuration and run directory', async () => {
    expect((await a.run('hostname')).stdout.trim()).toBe('host-a');
    expect((await b.run('hostname')).stdout.trim()).toBe('host-b');
    expect(hostname()).not.toMatch(/^host-[ab]$/); // the root namespace keeps its own
    // one kernel: the boot id is shared, so only the hostname tells the hosts apart
    const boot = (h: Host) => h.run('cat', ['/proc/sys/kernel/random/boot_id']).then((r) => r.stdout);
    expect(await boot(a)).toBe(await boot(b));
    const addrs = (await a.run('ip', ['-4', '-o', 'addr', 'show'])).stdout;
    expect(addrs).toContain(`inet ${a.addr}/24`);
    expect(addrs).toContain('inet 127.0.0.1/8');
    expect(addrs).not.toContain(set.gateway);
    expect(a.runDir).not.toBe(b.runDir);
    expect((await a.run('sh', ['-c', 'echo $ARCHIPELAGO_CONF'])).stdout.trim()).toBe(a.confs.file);
    expect((await b.run('sh', ['-c', 'echo $ARCHIPELAGO_CONF'])).stdout.trim()).toBe(b.confs.file);
    const conf = readFileSync(a.confs.file, 'utf8');
    expect(conf).toContain(`RUN_DIR = ${a.runDir}`);
    expect(conf).toContain(`archip_dir = ${set.shared.maps}`);
    expect(conf).toMatch(/\[mapperd\][^[]*lock_timeout = 2/); // createHosts' `config` over the defaults
  });

  it('hosts reach each other and the root side of the bridge, nothing else', async () => {
    const server = b.spawn(process.execPath, ['-e', LISTEN, b.addr, '7000'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise((r) => server.stdout?.once('data', r));
    const r = await a.run(process.execPath, ['-e', CONNECT, b.addr, '7000'], { timeout: 10_000 });
    expect(r.stdout.trim(), r.stderr).toBe('host-b'); // the answer comes from b's UTS namespace
    // no default route: the machine's own network is unreachable from a host
    const out = await a.run('ip', ['route', 'get', '192.0.2.1']);
    expect(out.code).not.toBe(0);
    expect(out.stderr).toMatch(/unreachable/i);
  });

  it("each host sees the shared blocker directories: A's volume, locked by A, as B reads it", async () => {
    await a.ok('create', 'shared1', '--size', '16M');
    const mapFiles = readdirSync(set.shared.maps, { recursive: true }).map(String);
    expect(mapFiles.some((f) => f.endsWith('/shared1'))).toBe(true); // on the shared filesystem
    const names = ((await b.vlmc('ls', '--json')).json as Array<{ name: string }>).map((v) => v.name);
    expect(names).toEqual(['shared1']);

    await a.ok('open', 'shared1'); // a host hold, until `vlmc close`
    const info = (await b.vlmc('info', 'shared1', '--json')).json as {
      size: number;
      lockOwner: string | null;
    };
    expect(info).toMatchObject({ size: 16 * 1024 * 1024, lockOwner: 'host-a_embedded' });
    expect(await b.ok('info', 'shared1')).toMatch(/lock owner:\s+host-a_embedded/);
    const taken = await b.vlmc('open', 'shared1');
    expect(taken.code).not.toBe(0);
    expect(taken.stderr).toMatch(/ELOCKED.*host-a_embedded/);

    await a.ok('close', 'shared1');
    await b.ok('open', 'shared1');
    expect(((await a.vlmc('info', 'shared1', '--json')).json as { lockOwner: string }).lockOwner).toBe(
      'host-b_embedded',
    );
    await b.ok('close', 'shared1');
  });

  it('both hosts reach the Ceph cluster on the bridge address', async () => {
    expect(set.cluster?.addr).toBe(set.gateway);
    const conf = set.cluster?.conf as string;
    for (const h of [a, b]) {
      const r = await h.run('rados', ['-c', conf, '--client_mount_timeout', '10', 'lspools'], {
        timeout: 30_000,
      });
      expect(r.stdout.split('\n'), r.stderr).toEqual(expect.arrayContaining(['blocks', 'maps']));
    }
    // what one host writes, the other reads (and both name the set's RADOS namespace)
    const put = await a.run('sh', [
      '-c',
      `echo from-a | rados -c ${conf} -p maps -N ${set.radosNamespace} put probe -`,
    ]);
    expect(put.code, put.stderr).toBe(0);
    const got = await b.run('rados', [
      '-c',
      conf,
      '-p',
      'maps',
      '-N',
      set.radosNamespace,
      'get',
      'probe',
      '-',
    ]);
    expect(got.stdout).toBe('from-a\n');
    expect(readFileSync(b.confs.rados as string, 'utf8')).toContain(`namespace = ${set.radosNamespace}`);
  });

  it('vlmc map in a host serves NBD on a unix socket that a client in that host reads', async () => {
    await a.ok('create', 'nbd1', '--size', '8M');
    const uri = await a.ok('map', 'nbd1');
    expect(uri).toMatch(/^nbd\+unix:\/\/\/nbd1\?socket=/);
    expect(uri).toContain(a.runDir);
    const info = await a.run('qemu-img', ['info', '--output=json', uri], { timeout: 30_000 });
    expect(info.code, info.stderr).toBe(0);
    expect((JSON.parse(info.stdout) as { 'virtual-size': number })['virtual-size']).toBe(8 * 1024 * 1024);
    // the endpoint runs in host A (its netns), so B's lock view names A
    const pids = await a.pids();
    expect(pids.length).toBeGreaterThan(0);
    expect(((await b.vlmc('info', 'nbd1', '--json')).json as { lockOwner: string }).lockOwner).toBe(
      'host-a_embedded',
    );
    await a.ok('unmap', 'nbd1');
  });

  it('a host can be cut off from the bridge and crashed (every process killed)', async () => {
    await a.setLink(false);
    const cut = await a.run(process.execPath, ['-e', CONNECT, set.gateway, '1'], { timeout: 10_000 });
    expect(cut.code).not.toBe(0);
    await a.setLink(true);

    const sleeper = a.spawn('sleep', ['600'], { stdio: 'ignore' });
    const gone = new Promise((r) => sleeper.once('exit', (_code, signal) => r(signal)));
    await expect.poll(() => a.pids()).toContain(sleeper.pid);
    expect(await b.pids()).not.toContain(sleeper.pid);
    await a.kill();
    expect(await gone).toBe('SIGKILL');
  });
});

// Destroy and the cleanup of crashed runs: nothing of a set left on the machine.
suite('two hosts: destroy and leftovers', () => {
  const gone = (id: number, dir: string) => {
    const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    expect(netns).not.toMatch(new RegExp(`^${NAME_PREFIX}${id}-`, 'm'));
    const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
    expect(links).not.toMatch(new RegExp(`: ${NAME_PREFIX}${id}(v\\d+)?[:@]`));
    expect(existsSync(join(STATE_DIR, String(id)))).toBe(false);
    expect(existsSync(dir)).toBe(false);
    expect(readdirSync('/dev/shm').filter((f) => f.startsWith(`${NAME_PREFIX}${id}-`))).toEqual([]);
  };

  it('destroy removes namespaces, links, state, segments, directories and every process', async () => {
    const set = await createHosts(['gone-a', 'gone-b']);
    const a = set.hosts[0] as Host;
    await a.ok('create', 'v', '--size', '4M');
    const orphan = a.spawn('sleep', ['600'], { stdio: 'ignore', detached: true });
    const killed = new Promise((r) => orphan.once('exit', (_c, signal) => r(signal)));
    orphan.unref();
    await set.destroy();
    expect(await killed).toBe('SIGKILL');
    gone(set.id, set.dir);
    await set.destroy(); // idempotent
  });

  it('a set whose owner died (a crashed run) is removed by the next cleanup, found by its names', async () => {
    const set = await createHosts(['crash-a']);
    // Make a process of ours the set's owner, then let it die as a crashed test run would.
    const owner = spawn('sleep', ['600'], { stdio: 'ignore' });
    const state = join(STATE_DIR, String(set.id), 'owner.json');
    const pid = owner.pid as number;
    writeFileSync(state, JSON.stringify({ pid, start: processStart(pid), dir: set.dir }));
    // a stray namespace of that set (as a crash in the middle of createHosts leaves)
    execFileSync('ip', ['netns', 'add', `${NAME_PREFIX}${set.id}-stray`]);
    const leftover = (set.hosts[0] as Host).spawn('sleep', ['600'], { stdio: 'ignore' });
    const killed = new Promise((r) => leftover.once('exit', (_c, signal) => r(signal)));

    expect(await cleanupLeftovers()).not.toContain(set.id); // its owner lives
    expect(existsSync(state)).toBe(true);
    owner.kill('SIGKILL');
    await new Promise((r) => owner.once('exit', r));
    expect(await cleanupLeftovers()).toContain(set.id);
    expect(await killed).toBe('SIGKILL');
    gone(set.id, set.dir);
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toContain(
      `${NAME_PREFIX}${set.id}-stray`,
    );
    await set.destroy(); // no longer its owner's: touches nothing (N may be another set's by now)
  });
});
