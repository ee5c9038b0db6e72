/**
 * The fast dispatch (./main.ts) against oclif: which command lines it takes, and, through the
 * built `vlmc` (packages/cli/bin/vlmc.js), the same stdout, stderr and exit status as the oclif
 * commands (ARCHIPELAGO_CLI_FAST=0) for the same calls on two stores in the same state.
 *
 * Build first: `pnpm run -s build` (or `npx tsc --build packages/cli && node packages/cli/scripts/bundle.mjs`).
 * 21 calls per side, in 6 steps of concurrent calls, the two sides concurrently: ~8-13 s on a
 * 2-vCPU machine shared with other work (load 3-5).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testConf } from '../__fixtures__/conf.js';
import { parseFast } from './main.js';

const PKG = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const BIN = join(PKG, 'bin', 'vlmc.js');
const FAST_BUNDLE = join(PKG, 'dist', 'bundle', 'fast.cjs');

describe('parseFast: the command lines the fast dispatch takes', () => {
  it('takes the hot forms, global options before or after the command word', () => {
    expect(parseFast(['info', 'v'])).toEqual({ command: 'info', name: 'v', json: false });
    expect(parseFast(['info', 'v', '--json'])).toEqual({ command: 'info', name: 'v', json: true });
    expect(parseFast(['--json', '-c', '/x.conf', 'snapshot', 'v', 's'])).toEqual({
      command: 'snapshot',
      name: 'v',
      snap: 's',
      json: true,
      config: '/x.conf',
    });
    expect(parseFast(['create', 'c', '--snap', 's', '--config=/x.conf'])).toEqual({
      command: 'create',
      name: 'c',
      snap: 's',
      json: false,
      config: '/x.conf',
    });
    expect(parseFast(['create', '--snap=s', '-s', '2G', 'c', '--json'])).toEqual({
      command: 'create',
      name: 'c',
      snap: 's',
      size: '2G',
      json: true,
    });
    expect(parseFast(['create', 'c', '--size', '10'])).toEqual({
      command: 'create',
      name: 'c',
      size: '10',
      json: false,
    });
  });

  it('leaves everything else to oclif', () => {
    for (const argv of [
      [],
      ['list'],
      ['help', 'info'],
      ['info'], // missing argument
      ['info', 'a', 'b'], // extra argument
      ['snapshot', 'v'],
      ['info', 'v', '--help'],
      ['info', 'v', '-h'],
      ['info', 'v', '--v0'], // the v0 flags: oclif's
      ['create', 'c', '--snap', 's', '--v0-size', '100'],
      ['info', 'v', '--bogus'],
      ['info', 'v', '--snap', 's'], // create's flag on info
      ['create', 'c', '--snap'], // no value
      ['create', 'c', '--snap', '-x'], // a value that looks like an option
      ['create', 'c', '--snap', ''],
      ['create', 'c', '--snap', 's', '--snap', 't'], // twice
      ['info', 'v', '--json', '--json'],
      ['info', '--', 'v'],
      ['info', ''],
      ['info', '-cX', 'v'],
      ['create', 'c', '-s=1G'],
      ['map', 'v', '--fuse', '/x'], // map's other endpoints: oclif's
      ['map', 'v', '--device', 'loop'],
      ['map', 'v', '--vhost-user', '/x.sock'],
      ['map', 'v', '--port', '65536'], // out of range: oclif's message
      ['map', 'v', '--port', '08'],
      ['map', 'v', '--port', '1', '--socket', '/x.sock'], // exclusive: oclif's message
      ['map', 'v', '-r', '--readonly'],
      ['map', 'v', '-rc', '/x.conf'],
      ['unmap'],
      ['showmapped', 'v'],
    ]) {
      expect(parseFast(argv), argv.join(' ')).toBeUndefined();
    }
  });

  it('takes map, unmap and showmapped in their plain NBD forms', () => {
    expect(parseFast(['map', 'v'])).toEqual({ command: 'map', name: 'v', readonly: false, json: false });
    expect(parseFast(['-c', '/x.conf', 'map', '-r', 'v', '--socket', '/s.sock', '--json'])).toEqual({
      command: 'map',
      name: 'v',
      readonly: true,
      socket: '/s.sock',
      json: true,
      config: '/x.conf',
    });
    expect(parseFast(['map', 'v', '--readonly', '--port=0'])).toEqual({
      command: 'map',
      name: 'v',
      readonly: true,
      port: 0,
      json: false,
    });
    expect(parseFast(['unmap', '/dev/nbd0', '--json'])).toEqual({
      command: 'unmap',
      name: '/dev/nbd0',
      json: true,
    });
    expect(parseFast(['showmapped'])).toEqual({ command: 'showmapped', json: false });
  });
});

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function vlmc(args: string[], env: NodeJS.ProcessEnv): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('the fast dispatch prints what oclif prints', { timeout: 120_000 }, () => {
  let dir: string;
  beforeAll(async () => {
    if (!existsSync(FAST_BUNDLE))
      throw new Error(`the CLI is not built (${FAST_BUNDLE} is missing): pnpm run -s build`);
    dir = await mkdtemp(join(tmpdir(), 'vlmc-fast-'));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** One side: its own store (with a key that has no effect, for the notice on stderr). */
  async function side(name: string, fast: boolean) {
    const conf = join(dir, `${name}.conf`);
    const text = testConf(join(dir, name), name, '\n[XSEG]\nsegment_alignment = 12\n');
    // A run directory per side: each maps its volumes from an endpoint process of its own.
    await writeFile(
      conf,
      text.replace('[ARCHIPELAGO]\n', `[ARCHIPELAGO]\nRUN_DIR = ${join(dir, name, 'run')}\n`),
    );
    const env: NodeJS.ProcessEnv = { ...process.env, ARCHIPELAGO_CONF: conf, ARCHIPELAGO_WIRING: 'embedded' };
    delete env.VLMC_DEBUG;
    delete env.ARCHIPELAGO_DEBUG;
    if (fast) delete env.ARCHIPELAGO_CLI_FAST;
    else env.ARCHIPELAGO_CLI_FAST = '0';
    return { conf, run: (args: string[], extra: NodeJS.ProcessEnv = {}) => vlmc(args, { ...env, ...extra }) };
  }

  /**
   * The calls, in steps run one after the other; the calls of a step run concurrently (they touch
   * different volumes, or only read). Each call is a function of the side's configuration file.
   */
  const STEPS: Array<Array<(conf: string) => string[]>> = [
    [() => ['create', 'v', '--size', '1G']],
    [
      () => ['info', 'v'],
      () => ['info', 'v', '--json'],
      () => ['snapshot', 'nope', 's3', '--json'], // no such volume
      () => ['snapshot', 'v', 'bad/name'],
      () => ['create', 'c3', '--snap', 'nope'], // no such snapshot
      () => ['create', 'c4', '--size', '10x'],
      () => ['info', 'nope'],
      () => ['info', 'bad/name', '--json'],
      () => ['info'], // oclif's usage error on both sides
    ],
    [() => ['snapshot', 'v', 's1']],
    [
      () => ['snapshot', 'v', 's2', '--json'],
      () => ['create', 'c1', '--snap', 's1'],
      () => ['create', 'bad/name', '--snap', 's1', '--json'],
    ],
    [
      () => ['snapshot', 'v', 's1'], // exists
      () => ['create', 'c1', '--snap', 's1', '--json'], // exists
      () => ['create', 'c2', '--snap=s2', '-s', '2G', '--json'],
    ],
    [
      (conf) => ['-c', conf, 'info', 'c1'], // not beside "create c1": that one holds c1's lock a moment
      () => ['snapshot', 'v', 's1', '--json'],
      (conf) => ['--json', `--config=${conf}`, 'create', 'c5', '--snap', 's1'],
    ],
    // map, showmapped, unmap: the side's run directory and the endpoint's pid are normalized.
    [() => ['map', 'v']],
    [
      () => ['map', 's1', '--json'], // a snapshot: mapped read-only
      () => ['map', 'v'], // already mapped: EBUSY
      () => ['map', 'nope', '--json'],
      () => ['map', 'c1', '--port', '70000'], // oclif's range error on both sides
    ],
    [() => ['showmapped'], () => ['showmapped', '--json']],
    [() => ['unmap', 'v'], () => ['unmap', 's1', '--json']],
    [() => ['unmap', 'v'], () => ['showmapped']],
  ];
  const CALLS = STEPS.flat();

  it('same stdout, stderr and exit status, call by call (text and --json, successes and errors)', async () => {
    const [fast, slow] = await Promise.all([side('fast', true), side('oclif', false)]);
    const runAll = async (s: typeof fast) => {
      const out: Result[] = [];
      for (const step of STEPS) out.push(...(await Promise.all(step.map((call) => s.run(call(s.conf))))));
      return out;
    };
    const [a, b] = await Promise.all([runAll(fast), runAll(slow)]);
    /** A result with the side's directory and the endpoint's pid and start time taken out. */
    const plain = (r: Result, side: string): Result => {
      const norm = (t: string) =>
        t
          .replaceAll(join(dir, side), 'SIDE')
          .replaceAll(`${side}.conf`, 'SIDE.conf')
          .replace(/("pid": )\d+/g, '$1PID')
          .replace(/\(pid \d+\)/g, '(pid PID)')
          .replace(/("(?:started|start)": )"[^"]*"/g, '$1"T"')
          .replace(/ {2,}/g, '  ') // showmapped's columns: their widths follow the paths and pids
          .replace(/ {2}\d+ {2}(mapped|stale)/g, '  PID  $1');
      return { code: r.code, stdout: norm(r.stdout), stderr: norm(r.stderr) };
    };
    for (const [i, call] of CALLS.entries()) {
      const label = call('CONF').join(' ');
      expect(plain(a[i]!, 'fast'), label).toEqual(plain(b[i]!, 'oclif'));
    }
    // What a user sees, on the fast side: the notice, errors with their codes, --json as JSON.
    const at = (args: string) => a[CALLS.findIndex((c) => c('CONF').join(' ') === args)]!;
    const notice =
      'vlmc: notice: [XSEG] segment_alignment: no effect here: the segment aligns itself (pages of 4 KiB, request data on 64 bytes)\n';
    expect(at('snapshot v s1')).toEqual({
      code: 0,
      stdout: 'created snapshot s1 of volume v\n',
      stderr: notice,
    });
    expect(at('-c CONF info c1').stdout).toMatch(/^parent: +s1 \(snapshot\)$/m);
    expect(JSON.parse(at('create c2 --snap=s2 -s 2G --json').stdout)).toMatchObject({
      name: 'c2',
      readonly: false,
      size: 2 * 1024 ** 3,
    });
    expect(JSON.parse(at('--json --config=CONF create c5 --snap s1').stdout)).toMatchObject({ name: 'c5' });
    expect(JSON.parse(at('create c1 --snap s1 --json').stdout)).toMatchObject({
      error: { code: 'EEXIST_VOLUME' },
    });
    expect(at('info nope')).toMatchObject({ code: 1, stdout: '' });
    expect(at('info nope').stderr).toMatch(/^vlmc: ENOENT_VOLUME: /m);
    expect(JSON.parse(at('snapshot v s1 --json').stdout)).toMatchObject({ error: { code: 'EEXIST_VOLUME' } });
    expect(at('info').stderr).toMatch(/^vlmc: EINVAL: /m);
    expect(at('map v').stdout).toBe(`nbd+unix:///v?socket=${join(dir, 'fast', 'run', 'v.sock')}\n`);
    expect(JSON.parse(at('map s1 --json').stdout)).toMatchObject({ volume: 's1', readonly: true });
    expect(at('map nope --json').stdout).toMatch(/"code": "ENOENT_VOLUME"/);
    const listed = JSON.parse(at('showmapped --json').stdout) as Array<{ volume: string; pid: number }>;
    expect(listed.map((m) => m.volume).sort()).toEqual(['s1', 'v']);
    expect(listed[0]!.pid).toBe(listed[1]!.pid); // one endpoint process for both
    expect(at('unmap v')).toMatchObject({ code: 0, stdout: 'unmapped v\n' });
    const last = a[CALLS.findLastIndex((c) => c('CONF').join(' ') === 'showmapped')]!;
    expect(last.stdout).toBe('no mapped volumes\n'); // after both unmaps

    // And it ran without oclif: oclif's debug log (DEBUG=oclif*) stays silent on the fast side.
    const [da, db] = await Promise.all([
      fast.run(['info', 'v'], { DEBUG: 'oclif*' }),
      slow.run(['info', 'v'], { DEBUG: 'oclif*' }),
    ]);
    expect(da.code).toBe(0);
    expect(da.stdout).toBe(db.stdout);
    expect(da.stderr).not.toMatch(/oclif/);
    expect(db.stderr).toMatch(/oclif/);
  });
});
