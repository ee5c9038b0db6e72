/**
 * The three tools (`vlmc`, `archipelago`, `xseg`) as a user runs them, built: the same failure
 * reads the same in all three, usage errors included, and help is where oclif users look for it.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultConfig, serializeConfig } from '@archipelago/runtime';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, TOOL, VLMC, XSEG } from './daemons/helpers.js';

const BINS = { vlmc: VLMC, archipelago: TOOL, xseg: XSEG } as const;
type Tool = keyof typeof BINS;

let dir: string;
let conf: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'archip-tools-'));
  conf = join(dir, 'archipelago.conf');
  writeFileSync(conf, serializeConfig(defaultConfig(dir) as unknown as Record<string, unknown>));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(tool: Tool, ...args: string[]) {
  const r = spawnSync(process.execPath, [BINS[tool], ...args], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, ARCHIPELAGO_CONF: conf },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A command of each tool and a valid first argument, to add a stray one to. */
const SAMPLE: Record<Tool, string[]> = {
  vlmc: ['showmapped'],
  archipelago: ['status', 'mapperd'],
  xseg: ['reportall', 'posix:archtools:'],
};

describe('one error format in vlmc, archipelago and xseg', () => {
  for (const tool of Object.keys(BINS) as Tool[]) {
    it(`${tool}: an unknown flag, a stray argument and an unknown command are EINVAL, one line, exit 1`, () => {
      const flag = run(tool, ...SAMPLE[tool], '--nosuch');
      expect(flag.status).toBe(1);
      expect(flag.stderr).toBe(`${tool}: EINVAL: Nonexistent flag: --nosuch\n`);

      const stray = run(tool, ...SAMPLE[tool], 'stray');
      expect(stray.status).toBe(1);
      expect(stray.stderr).toBe(`${tool}: EINVAL: Unexpected argument: stray\n`);

      const json = run(tool, ...SAMPLE[tool], 'stray', '--json');
      expect(json.status).toBe(1);
      expect(JSON.parse(json.stdout)).toEqual({
        error: { code: 'EINVAL', message: 'Unexpected argument: stray', details: {} },
      });
      expect(json.stderr).toBe('');

      const unknown = run(tool, 'nosuch');
      expect(unknown.status).toBe(1);
      expect(unknown.stderr).toBe(
        `${tool}: EINVAL: unknown command "nosuch"; run "${tool} --help" for the list of commands\n`,
      );
    });

    it(`${tool}: -h, help COMMAND and COMMAND -h print help and exit 0`, () => {
      const command = SAMPLE[tool][0] as string;
      const top = run(tool, '-h');
      expect(top.status, top.stderr).toBe(0);
      expect(top.stdout).toContain(`$ ${tool} [COMMAND]`);
      for (const args of [
        ['help', command],
        [command, '-h'],
        [command, '--help'],
      ]) {
        const r = run(tool, ...args);
        expect(r.status, `${tool} ${args.join(' ')}: ${r.stderr}`).toBe(0);
        expect(r.stdout).toContain('USAGE');
        expect(r.stdout).toContain(`$ ${tool} ${command}`);
      }
    });
  }

  it('a missing configuration file reads the same in vlmc and archipelago', () => {
    const missing = join(dir, 'nope.conf');
    for (const tool of ['vlmc', 'archipelago'] as const) {
      const r = run(tool, tool === 'vlmc' ? 'list' : 'status', '-c', missing);
      expect(r.status).toBe(1);
      expect(r.stderr).toBe(
        `${tool}: EINVAL_CONFIG: ${missing}: no such configuration file (named by -c/--config)\n`,
      );
    }
  });

  it('INTERNAL, the code of an unexpected failure, is listed in docs/errors.md', () => {
    expect(readFileSync(join(ROOT, 'docs/errors.md'), 'utf8')).toMatch(/^\| `INTERNAL` \|/m);
  });
});

describe('help', () => {
  it("vlmc's top help names vlmc, and lists aliases as aliases, not as commands", () => {
    const top = run('vlmc', '--help');
    expect(top.stdout.split('\n')[0]).toMatch(/^vlmc: /);
    expect(top.stdout).not.toMatch(/^\s+(ls|rm)\s/m);
    expect(top.stdout).toMatch(/^\s+list\s/m);
    expect(top.stdout).toMatch(/^\s+remove\s/m);
    expect(run('vlmc', 'list', '-h').stdout).toMatch(/ALIASES\n\s+\$ vlmc ls/);
    expect(run('vlmc', 'remove', '-h').stdout).toMatch(/ALIASES\n\s+\$ vlmc rm/);
  });

  it('archipelago status takes a peer, as the guide says of every archipelago command', () => {
    const r = run('archipelago', 'status', 'mapperd', '--json');
    expect(r.status, r.stderr).toBe(0);
    const st = JSON.parse(r.stdout) as { peers: { role: string; state: string }[] };
    expect(st.peers).toEqual([expect.objectContaining({ role: 'mapperd', state: 'not running' })]);
    const bad = run('archipelago', 'status', 'nosuch');
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^archipelago: EINVAL: unknown peer "nosuch"/);
  });
});

/** Starts a gateway command, resolves its URL once it listens, and a stop function. */
function startGatewayProcess(
  bin: string,
  args: string[],
): Promise<{ url: string; stop: () => Promise<number | null> }> {
  const p = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stderr.on('data', (d) => {
    err += d;
  });
  return new Promise((resolve, reject) => {
    p.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (\S+)/.exec(out);
      if (m)
        resolve({
          url: m[1] as string,
          stop: () =>
            new Promise((r) => {
              p.once('exit', (code) => r(code));
              p.kill('SIGTERM');
            }),
        });
    });
    p.once('exit', (code) => reject(new Error(`gateway exited with ${code}: ${err}`)));
  });
}

describe('archipelago-gateway and archipelago gateway: one launcher', () => {
  it('both serve a file uploaded through the other, from the same data directory', async () => {
    const data = join(dir, 'gwdata');
    const a = await startGatewayProcess(join(ROOT, 'packages/archipelago/bin/archipelago-gateway.js'), [
      '--data',
      data,
      '--port',
      '0',
      '--token',
      'tk1,acct',
    ]);
    const auth = { 'X-Auth-Token': 'tk1' };
    const body = Buffer.alloc(5 << 20, 0x61);
    body.write('archipelago', 4 << 20);
    try {
      expect((await fetch(`${a.url}/acct/c1`, { method: 'PUT', headers: auth })).status).toBe(201);
      expect((await fetch(`${a.url}/acct/c1/f1`, { method: 'PUT', headers: auth, body })).status).toBe(201);
    } finally {
      expect(await a.stop()).toBe(0);
    }
    // The same data through `archipelago gateway`, reading it from a configuration file.
    const gwConf = join(dir, 'gw.conf');
    // As root, the gateway would switch to USER: the temp directory is not reachable by another account.
    const gwConfig = defaultConfig(data);
    gwConfig.ARCHIPELAGO = { ...gwConfig.ARCHIPELAGO, USER: 'root', GROUP: 'root' };
    writeFileSync(gwConf, serializeConfig(gwConfig as unknown as Record<string, unknown>));
    const b = await startGatewayProcess(TOOL, [
      'gateway',
      '-c',
      gwConf,
      '--port',
      '0',
      '--token',
      'tk2,acct',
    ]);
    try {
      const got = await fetch(`${b.url}/acct/c1/f1`, { headers: { 'X-Auth-Token': 'tk2' } });
      expect(got.status).toBe(200);
      expect(Buffer.from(await got.arrayBuffer()).equals(body)).toBe(true);
      expect((await fetch(`${b.url}/acct/c1/f1`, { headers: { 'X-Auth-Token': 'tk1' } })).status).toBe(401);
    } finally {
      expect(await b.stop()).toBe(0);
    }
  });

  it('refuses to start without a way to authenticate, with the one error format', () => {
    const r = spawnSync(
      process.execPath,
      [join(ROOT, 'packages/archipelago/bin/archipelago-gateway.js'), '--data', dir],
      {
        encoding: 'utf8',
      },
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(
      /^archipelago: EINVAL: no users or tokens: give --auth-file FILE .*--no-auth\n$/,
    );
  });
});
