/**
 * The configuration file as the operator writes it (issue 16): unknown sections and keys,
 * duplicates, values out of range, and the keys that have no effect here.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArchipelagoError } from '@archipelago/libxseg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { configNotices, didYouMean, loadConfig } from './config.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vlmc-config-lint-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const MINIMAL = `[blockerb]
type = file_blocker
archip_dir = blocks

[blockerm]
type = file_blocker
archip_dir = maps
`;

async function load(text: string) {
  const p = join(dir, 'archipelago.conf');
  await writeFile(p, text);
  return { p, load: () => loadConfig(p, { env: {}, systemPath: join(dir, 'no-etc.conf') }) };
}

async function refused(text: string): Promise<{ p: string; e: ArchipelagoError }> {
  const { p, load: l } = await load(text);
  try {
    l();
  } catch (e) {
    if (!ArchipelagoError.isInstance(e)) throw e;
    expect(e.code).toBe('EINVAL_CONFIG');
    expect(e.message.startsWith(`${p}: `)).toBe(true);
    return { p, e };
  }
  throw new Error(`accepted:\n${text}`);
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

describe('values out of range are EINVAL_CONFIG, never INTERNAL', () => {
  it.each([
    ['blockerb', 'fdcache = 99999999999999999999', 'blockerb.fdcache must be <= 1048576'],
    ['blockerb', 'fdcache = 99999999999', 'blockerb.fdcache must be <= 1048576 (got 99999999999)'],
    ['blockerb', 'nr_ops = 131072', 'blockerb.nr_ops must be <= 65536'],
    ['blockerb', 'nr_threads = 100000', 'blockerb.nr_threads must be <= 1024'],
    ['blockerb', 'portno_end = 70000', 'blockerb.portno_end must be <= 65535'],
    ['blockerb', 'prefix = archip/', 'blockerb.prefix must match pattern'],
    ['mapperd', 'lock_timeout = 1e12', 'mapperd.lock_timeout must be <= 86400'],
    ['mapperd', 'lease_timeout = 999999', 'mapperd.lease_timeout must be <= 86400'],
    ['XSEG', 'SEGMENT_SIZE = 99999999999', 'XSEG.SEGMENT_SIZE must be <= 1048576'],
    ['XSEG', 'SEGMENT_PORTS = 70000', 'XSEG.SEGMENT_PORTS must be <= 65536'],
    ['XSEG', 'segment_type = sysv', 'XSEG.segment_type must be one of posix'],
    ['XSEG', 'segment_name = ../etc', 'XSEG.segment_name must match pattern'],
  ])('[%s] %s', async (section, line, message) => {
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
