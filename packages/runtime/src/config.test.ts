import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArchipelagoError } from '@archipelago/libxseg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  CONFIG_ENV,
  configNotices,
  dataDirectory,
  defaultConfig,
  deserializeConfig,
  didYouMean,
  loadConfig,
  parseUmask,
  resolveConfigPath,
  serializeConfig,
} from './config.js';

let dir: string;
/** An /etc path that never exists, so the host's own configuration never interferes. */
let systemPath: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vlmc-config-'));
  systemPath = join(dir, 'etc', 'archipelago.conf');
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const MINIMAL = `[blockerb]
type = file_blocker
archip_dir = blocks

[blockerm]
type = file_blocker
archip_dir = /srv/archip/maps
`;

async function writeConf(name: string, text: string): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, text);
  return p;
}

function failure(f: () => unknown): ArchipelagoError {
  try {
    f();
  } catch (e) {
    if (ArchipelagoError.isInstance(e)) return e;
    throw e;
  }
  throw new Error('expected a failure');
}

describe('loadConfig', () => {
  it('fills every key the file leaves out with the shipped defaults', async () => {
    const p = await writeConf('a.conf', MINIMAL);
    const { config, path, source, created } = loadConfig(p, { env: {}, systemPath });
    expect(path).toBe(p);
    expect(source).toBe('flag');
    expect(created).toBe(false);
    expect(config.ARCHIPELAGO).toEqual({
      USER: 'archipelago',
      GROUP: 'archipelago',
      BLKTAP_ENABLED: false,
      UMASK: 0o007,
    });
    expect(config.XSEG).toMatchObject({
      SEGMENT_PORTS: 2048,
      SEGMENT_DYNPORTS: 1024,
      SEGMENT_SIZE: 2048,
      VTOOL_START: 1003,
      VTOOL_END: 1022,
    });
    expect(config.PEERS.ROLES).toBe('blockerb blockerm mapperd vlmcd');
    expect(config.blockerb).toMatchObject({
      portno_start: 1000,
      portno_end: 1000,
      nr_ops: 64,
      fdcache: 512,
      direct: false,
    });
    expect(config.blockerm).toMatchObject({ portno_start: 1002, portno_end: 1002 });
    expect(config.mapperd).toMatchObject({
      portno_start: 1001,
      nr_ops: 512,
      blockerb_port: 1000,
      blockerm_port: 1002,
      lock_timeout: 30,
    });
    expect(config.vlmcd).toMatchObject({
      portno_start: 500,
      portno_end: 999,
      nr_ops: 512,
      blocker_port: 1000,
      mapper_port: 1001,
    });
    // A relative archip_dir is relative to the file's directory.
    expect(config.blockerb.archip_dir).toBe(join(dir, 'blocks'));
    expect(config.blockerm.archip_dir).toBe('/srv/archip/maps');
    expect(config.blockerb.unique_str).toBeUndefined();
  });

  it('never rewrites an existing file', async () => {
    const p = await writeConf('a.conf', `; my comment\n${MINIMAL}`);
    loadConfig(p, { env: {}, systemPath });
    expect(await readFile(p, 'utf8')).toBe(`; my comment\n${MINIMAL}`);
  });

  it('converts INI strings: integers, Python booleans, octal umasks, case-insensitive keys', async () => {
    const p = await writeConf(
      'a.conf',
      `[Archipelago]
user = me
BLKTAP_ENABLED = True
umask = 022
[XSEG]
segment_ports = 4096
[blockerb]
TYPE = file_blocker
archip_dir = b
direct = yes
nr_ops = 128
unique_str = 42
[blockerm]
type = file_blocker
archip_dir = m
direct = off
lock_dir = locks
[mapperd]
lock_timeout = 2.5
`,
    );
    const { config } = loadConfig(p, { env: {}, systemPath });
    expect(config.ARCHIPELAGO).toMatchObject({ USER: 'me', BLKTAP_ENABLED: true, UMASK: 0o022 });
    expect(config.XSEG.SEGMENT_PORTS).toBe(4096);
    expect(config.blockerb).toMatchObject({
      type: 'file_blocker',
      direct: true,
      nr_ops: 128,
      unique_str: '42',
    });
    expect(config.blockerm).toMatchObject({ direct: false, lock_dir: join(dir, 'locks') });
    expect(config.mapperd.lock_timeout).toBe(2.5);
  });

  it.each([
    ['blockerb.nr_ops = 63', 'nr_ops = 63', 'blockerb.nr_ops must be a power of two'],
    ['a non-numeric nr_ops', 'nr_ops = many', 'blockerb.nr_ops must be integer (got "many")'],
    [
      'an unknown type',
      'type = nfs_blocker',
      'blockerb.type must be one of file_blocker, rados_blocker (got "nfs_blocker")',
    ],
    ['a bad boolean', 'direct = perhaps', 'blockerb.direct must be boolean (got "perhaps")'],
    [
      'a port past SEGMENT_PORTS',
      'portno_end = 5000',
      'blockerb.portno_end (5000) must be below XSEG.SEGMENT_PORTS (2048)',
    ],
    [
      'an inverted range',
      'portno_start = 10\nportno_end = 5',
      'blockerb.portno_start (10) is after blockerb.portno_end (5)',
    ],
    [
      'overlapping ranges',
      'portno_start = 1002\nportno_end = 1002',
      'overlaps blockerb.portno_start..portno_end (1002-1002)',
    ],
    [
      'a range over the vlmc tool ports',
      'portno_start = 1010\nportno_end = 1010',
      'overlaps XSEG.VTOOL_START..VTOOL_END',
    ],
  ])('rejects %s with EINVAL_CONFIG naming the file and the key', async (_what, line, message) => {
    const p = await writeConf(
      'bad.conf',
      line.startsWith('type =')
        ? MINIMAL.replace('type = file_blocker', line)
        : MINIMAL.replace('archip_dir = blocks', `archip_dir = blocks\n${line}`),
    );
    const e = failure(() => loadConfig(p, { env: {}, systemPath }));
    expect(e.code).toBe('EINVAL_CONFIG');
    expect(e.message).toContain(p);
    expect(e.message).toContain(message);
  });

  it('names missing sections and keys', async () => {
    const p = await writeConf('bad.conf', '[blockerb]\ntype = file_blocker\n');
    const e = failure(() => loadConfig(p, { env: {}, systemPath }));
    expect(e.code).toBe('EINVAL_CONFIG');
    expect(e.message).toContain('section [blockerm] is missing');
    const q = await writeConf('bad2.conf', MINIMAL.replace('archip_dir = blocks', ''));
    expect(failure(() => loadConfig(q, { env: {}, systemPath })).message).toContain(
      'blockerb.archip_dir is missing',
    );
    const r = await writeConf(
      'bad3.conf',
      MINIMAL.replace('type = file_blocker\narchip_dir = blocks', 'type = rados_blocker'),
    );
    expect(failure(() => loadConfig(r, { env: {}, systemPath })).message).toContain(
      'blockerb.pool is missing',
    );
  });

  it('checks that peers point at each other', async () => {
    const p = await writeConf(
      'bad.conf',
      `${MINIMAL}[mapperd]\nblockerm_port = 1000\n[PEERS]\nROLES = blockerb blockerm mapperd vlmcd poold\n`,
    );
    const e = failure(() => loadConfig(p, { env: {}, systemPath }));
    expect(e.message).toContain('mapperd.blockerm_port (1000) is not a port of [blockerm] (1002-1002)');
    expect(e.message).toContain('PEERS.ROLES names "poold" but there is no [poold] section');
  });

  it('accepts a rados_blocker section (RADOS is refused later, at run time)', async () => {
    const p = await writeConf(
      'r.conf',
      MINIMAL.replace('type = file_blocker\narchip_dir = blocks', 'type = rados_blocker\npool = blocks'),
    );
    expect(loadConfig(p, { env: {}, systemPath }).config.blockerb).toMatchObject({
      type: 'rados_blocker',
      pool: 'blocks',
    });
  });

  it('refuses a file named by -c or ARCHIPELAGO_CONF that does not exist, and creates nothing', async () => {
    const missing = join(dir, 'nope', 'archipelago.conf');
    const e = failure(() => loadConfig(missing, { env: {}, systemPath }));
    expect(e.code).toBe('EINVAL_CONFIG');
    expect(e.message).toContain(missing);
    const f = failure(() => loadConfig(undefined, { env: { [CONFIG_ENV]: missing }, systemPath }));
    expect(f.message).toContain('ARCHIPELAGO_CONF');
    await expect(readFile(missing)).rejects.toThrow();
  });

  it('resolves -c, then ARCHIPELAGO_CONF, then /etc, then the embedded default', async () => {
    const a = await writeConf('a.conf', MINIMAL);
    const b = await writeConf('b.conf', MINIMAL);
    const env = { [CONFIG_ENV]: b, XDG_DATA_HOME: join(dir, 'xdg') };
    expect(resolveConfigPath(a, { env, systemPath })).toEqual({ path: a, source: 'flag' });
    expect(resolveConfigPath(undefined, { env, systemPath })).toEqual({ path: b, source: 'env' });
    const noEnv = { XDG_DATA_HOME: join(dir, 'xdg') };
    expect(resolveConfigPath(undefined, { env: noEnv, systemPath })).toEqual({
      path: join(dir, 'xdg', 'archipelago', 'archipelago.conf'),
      source: 'default',
    });
    await mkdir(join(dir, 'etc'));
    await writeFile(systemPath, MINIMAL);
    expect(resolveConfigPath(undefined, { env: noEnv, systemPath })).toEqual({
      path: systemPath,
      source: 'system',
    });
  });

  it('creates the embedded default under XDG_DATA_HOME on first use, then reads it back', async () => {
    const env = { XDG_DATA_HOME: join(dir, 'xdg'), HOME: join(dir, 'home') };
    const first = loadConfig(undefined, { env, systemPath });
    const data = join(dir, 'xdg', 'archipelago');
    expect(first).toMatchObject({ path: join(data, 'archipelago.conf'), source: 'default', created: true });
    expect(first.config.blockerb.archip_dir).toBe(join(data, 'blocks'));
    expect(first.config.blockerm.archip_dir).toBe(join(data, 'maps'));
    const text = await readFile(first.path, 'utf8');
    expect(text).toContain('[ARCHIPELAGO]');
    expect(text).toContain('BLKTAP_ENABLED = False');
    expect(text).toContain('UMASK = 0o007');
    expect(text).toContain(`archip_dir = ${join(data, 'blocks')}`);
    const second = loadConfig(undefined, { env, systemPath });
    expect(second.created).toBe(false);
    expect(second.config).toEqual(first.config);
  });

  it('falls back to ~/.local/share without XDG_DATA_HOME', () => {
    expect(dataDirectory({ HOME: '/home/x' })).toBe('/home/x/.local/share/archipelago');
    expect(dataDirectory({ HOME: '/home/x', XDG_DATA_HOME: '/data' })).toBe('/data/archipelago');
  });
});

describe('INI (de)serialization', () => {
  it('round-trips the default configuration', () => {
    const c = defaultConfig('/d');
    expect(deserializeConfig(serializeConfig(c as unknown as Record<string, unknown>))).toEqual(c);
  });

  it('reads umasks as Python int(x, 0) does, plus leading-zero octal', () => {
    expect(parseUmask('0o007')).toBe(7);
    expect(parseUmask('022')).toBe(0o22);
    expect(parseUmask('18')).toBe(18);
    expect(parseUmask('0x12')).toBe(18);
    expect(parseUmask('abc')).toBeNull();
  });
});

// The configuration file as the operator writes it (issue 16): unknown sections and keys,
// duplicates, values out of range, and the keys that have no effect here.

async function load(text: string) {
  const p = await writeConf('archipelago.conf', text);
  return { p, load: () => loadConfig(p, { env: {}, systemPath }) };
}

/** The file `text` is refused with EINVAL_CONFIG, its message starting with the file. */
async function refused(text: string): Promise<{ p: string; e: ArchipelagoError }> {
  const { p, load: l } = await load(text);
  const e = failure(l);
  expect(e.code).toBe('EINVAL_CONFIG');
  expect(e.message.startsWith(`${p}: `)).toBe(true);
  return { p, e };
}

describe('unknown sections and keys', () => {
  it('refuses an unknown key, naming the line, the section and the key, with "did you mean"', async () => {
    const { e } = await refused(`${MINIMAL}lockdir = /srv/archip/locks\n`);
    expect(e.message).toContain(
      'line 8: unknown key [blockerm] (type file_blocker) lockdir; did you mean `lock_dir`?',
    );
    const g = await refused(`[XSEG]\nSEGMENT_SZE = 512\n${MINIMAL}`);
    expect(g.e.message).toContain('line 2: unknown key [XSEG] SEGMENT_SZE; did you mean `SEGMENT_SIZE`?');
    const far = await refused(`${MINIMAL}colour = blue\n`);
    expect(far.e.message).toContain('unknown key [blockerm] (type file_blocker) colour');
    expect(far.e.message).not.toContain('did you mean');
  });

  it('refuses an unknown section, with "did you mean" for a near role', async () => {
    const { e } = await refused(`${MINIMAL}\n[mapperdd]\nnr_ops = 16\n`);
    expect(e.message).toContain(
      'line 9: unknown section [mapperdd]: not a global section, nor a role of [PEERS] ROLES (blockerb blockerm mapperd vlmcd); did you mean `mapperd`?',
    );
    const c = await refused(`[Peers2]\nROLES = blockerb\n${MINIMAL}`);
    expect(c.e.message).toContain('unknown section [Peers2]');
  });

  it('knows the sections of the roles ROLES names, and the keys of their type', async () => {
    const extra = `[PEERS]\nROLES = blockerb blockerm mapperd vlmcd blockerc\n${MINIMAL}\n[blockerc]\ntype = rados_blocker\nportno_start = 40\nportno_end = 40\nnr_ops = 16\npool = blocks\n`;
    const { load: l } = await load(extra);
    expect(l().config.blockerc).toMatchObject({ pool: 'blocks' });
    const bad = await refused(`${extra}archip_dir = /srv\n`);
    expect(bad.e.message).toContain(
      '[blockerc] (type rados_blocker) archip_dir is a key of type file_blocker and has no effect here: remove it',
    );
  });

  it('refuses a file_blocker key in a rados_blocker section, and the reverse', async () => {
    const rados = MINIMAL.replace(
      'type = file_blocker\narchip_dir = blocks',
      'type = rados_blocker\npool = blocks\nfdcache = 64',
    );
    const { e } = await refused(rados);
    expect(e.message).toContain(
      'line 4: [blockerb] (type rados_blocker) fdcache is a key of type file_blocker and has no effect here: remove it',
    );
    const file = await refused(`${MINIMAL}pool = maps\n`);
    expect(file.e.message).toContain('[blockerm] (type file_blocker) pool is a key of type rados_blocker');
  });

  it('refuses a key outside any section', async () => {
    const { e } = await refused(`SEGMENT_SIZE = 512\n${MINIMAL}`);
    expect(e.message).toContain('line 1: key `SEGMENT_SIZE` is outside any section');
  });

  it('still matches keys case-insensitively, as ConfigParser did', async () => {
    const { load: l } = await load(`[xseg]\nsegment_size = 512\n${MINIMAL}Fdcache = 64\n`);
    const c = l().config;
    expect(c.XSEG.SEGMENT_SIZE).toBe(512);
    expect(c.blockerm.fdcache).toBe(64);
  });
});

describe('duplicates, as Python ConfigParser refuses them', () => {
  it('refuses a section given twice, naming both lines', async () => {
    const { e } = await refused(`${MINIMAL}\n[blockerb]\nfdcache = 64\n`);
    expect(e.message).toContain('line 9: duplicate section [blockerb] (first at line 1)');
  });

  it('refuses a global section given twice in another case', async () => {
    const { e } = await refused(`[XSEG]\nSEGMENT_SIZE = 512\n[xseg]\nSEGMENT_PORTS = 512\n${MINIMAL}`);
    expect(e.message).toContain('line 3: duplicate section [XSEG] (first at line 1)');
  });

  it('refuses a key given twice in one section, case-insensitively', async () => {
    const { e } = await refused(`${MINIMAL}fdcache = 64\nFDCACHE = 128\n`);
    expect(e.message).toContain('line 9: duplicate key [blockerm] FDCACHE (first at line 8)');
  });
});

/** section | line | what the message says; one case per line. */
const OUT_OF_RANGE = `
blockerb | fdcache = 99999999999999999999 | blockerb.fdcache must be <= 1048576
blockerb | fdcache = 99999999999 | blockerb.fdcache must be <= 1048576 (got 99999999999)
blockerb | nr_ops = 131072 | blockerb.nr_ops must be <= 65536
blockerb | nr_threads = 100000 | blockerb.nr_threads must be <= 1024
blockerb | portno_end = 70000 | blockerb.portno_end must be <= 65535
blockerb | prefix = archip/ | blockerb.prefix must match pattern
mapperd | lock_timeout = 1e12 | mapperd.lock_timeout must be <= 86400
mapperd | lease_timeout = 999999 | mapperd.lease_timeout must be <= 86400
XSEG | SEGMENT_SIZE = 99999999999 | XSEG.SEGMENT_SIZE must be <= 1048576
XSEG | SEGMENT_PORTS = 70000 | XSEG.SEGMENT_PORTS must be <= 65536
XSEG | segment_type = sysv | XSEG.segment_type must be one of posix
XSEG | segment_name = ../etc | XSEG.segment_name must match pattern`
  .trim()
  .split('\n')
  .map((row) => row.split(' | ') as [string, string, string]);

describe('values out of range are EINVAL_CONFIG, never INTERNAL', () => {
  it.each(OUT_OF_RANGE)('[%s] %s', async (section, line, message) => {
    const text =
      section === 'blockerb'
        ? MINIMAL.replace('archip_dir = blocks', `archip_dir = blocks\n${line}`)
        : `${MINIMAL}\n[${section}]\n${line}\n`;
    const { e } = await refused(text);
    expect(e.message).toContain(message);
  });

  it('rados timeouts too', async () => {
    const rados = MINIMAL.replace(
      'type = file_blocker\narchip_dir = blocks',
      'type = rados_blocker\npool = b\nconnect_timeout = 100000\nop_timeout = 1e9',
    );
    const { e } = await refused(rados);
    expect(e.message).toContain('blockerb.connect_timeout must be <= 3600');
    expect(e.message).toContain('blockerb.op_timeout must be <= 86400');
  });
});

describe('configNotices', () => {
  it('names each key that has no effect here, once, and nothing for a plain file', async () => {
    const plain = await load(MINIMAL);
    expect(configNotices(plain.load())).toEqual([]);
    const { load: l } = await load(
      `[ARCHIPELAGO]\nBLKTAP_ENABLED = True\n[XSEG]\nsegment_alignment = 12\n${MINIMAL.replace(
        'archip_dir = blocks',
        'archip_dir = blocks\nthreshold = 1000\npithos_migrate = True\nprefix = archip_',
      )}`,
    );
    const n = configNotices(l());
    expect(n.map((line) => line.split(':')[0])).toEqual([
      '[ARCHIPELAGO] BLKTAP_ENABLED',
      '[XSEG] segment_alignment',
      '[blockerb] threshold',
      '[blockerb] pithos_migrate',
      '[blockerb] prefix',
    ]);
    expect(n[0]).toContain('no Xen blktap');
    expect(n[3]).toContain('old Pithos path layout');
  });

  it('says nothing of BLKTAP_ENABLED = False or pithos_migrate = False (that is what happens here)', async () => {
    const { load: l } = await load(
      `[ARCHIPELAGO]\nBLKTAP_ENABLED = False\n${MINIMAL}pithos_migrate = False\n`,
    );
    expect(configNotices(l())).toEqual([]);
  });
});

describe('didYouMean', () => {
  it('suggests near names only', () => {
    expect(didYouMean('lockdir', ['lock_dir', 'archip_dir'])).toBe('; did you mean `lock_dir`?');
    expect(didYouMean('NR_OPS', ['nr_ops'])).toBe('; did you mean `nr_ops`?');
    expect(didYouMean('xy', ['nr_ops', 'fdcache'])).toBe('');
  });
});
