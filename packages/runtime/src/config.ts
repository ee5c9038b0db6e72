/**
 * The Archipelago configuration file (reference §5.2): INI with the sections `[ARCHIPELAGO]`,
 * `[XSEG]`, `[PEERS]` and one section per role (`[blockerb]`, `[blockerm]`, `[mapperd]`,
 * `[vlmcd]`, ...).
 *
 * Which file (first match wins):
 *   1. the path given with `-c/--config`;
 *   2. the environment variable ARCHIPELAGO_CONF;
 *   3. /etc/archipelago/archipelago.conf, when it exists;
 *   4. the embedded default `<data>/archipelago.conf`, `<data>` being $XDG_DATA_HOME/archipelago
 *      or ~/.local/share/archipelago. It is created on first use, with the blocks and maps kept
 *      under `<data>/blocks` and `<data>/maps`.
 * A file named by 1 or 2 must exist: it is never created.
 *
 * The file is read (and, for the embedded default, written) through `conf` with an INI
 * serializer; INI values are strings, so known numeric and boolean keys are converted before
 * the JSON schema checks them. Checks a schema cannot express (powers of two, port ranges that
 * must not overlap, ports that must name a peer) follow. Every fault is an ArchipelagoError
 * EINVAL_CONFIG whose message names the file and the key.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, extname, isAbsolute, join, resolve } from 'node:path';
import { ArchipelagoError } from '@archipelago/libxseg';
import Conf from 'conf';
import * as ini from 'ini';
import { CONFIG_SCHEMA } from './config-schema.js';
import { validate as generatedValidate } from './config-validate.generated.js';

export { CONFIG_ROOT_SCHEMA, CONFIG_SCHEMA } from './config-schema.js';

/** The system-wide configuration file of the original. */
export const SYSTEM_CONFIG_PATH = '/etc/archipelago/archipelago.conf';
/** Environment variable naming the configuration file. */
export const CONFIG_ENV = 'ARCHIPELAGO_CONF';

export type BlockerType = 'file_blocker' | 'rados_blocker';

export interface ArchipelagoSection {
  USER: string;
  GROUP: string;
  BLKTAP_ENABLED: boolean;
  /** A umask as a number (the file may say `0o007`, `007` or `7`). */
  UMASK: number;
  /** Where `vlmc map` keeps run-state (pids, sockets). Default: see `runDirectory`. */
  RUN_DIR?: string;
  [key: string]: unknown;
}

export interface XsegSection {
  SEGMENT_PORTS: number;
  SEGMENT_DYNPORTS: number;
  /** MiB. */
  SEGMENT_SIZE: number;
  VTOOL_START: number;
  VTOOL_END: number;
  [key: string]: unknown;
}

export interface PeersSection {
  /** Space-separated roles, also their start order unless ORDER is set. */
  ROLES: string;
  /** Space-separated: the start order (stop: the reverse); exactly the roles of ROLES. */
  ORDER?: string;
  [key: string]: unknown;
}

interface PeerSection {
  type: string;
  portno_start: number;
  portno_end: number;
  nr_ops: number;
  [key: string]: unknown;
}

export interface BlockerSection extends PeerSection {
  type: BlockerType;
  /** file_blocker: directory of the objects (absolute once loaded). */
  archip_dir?: string;
  /** file_blocker: flat directory for lock files (absolute once loaded). */
  lock_dir?: string;
  fdcache: number;
  direct: boolean;
  /**
   * `always` syncs every write before acknowledging it (RADOS: on commit); `flush` is write-back:
   * writes are durable at the next flush (NBD FLUSH) or at once with FUA. Default: `flush` for
   * blockerb (data, as qemu-nbd, nbdkit and rbd-nbd), `always` for blockerm (maps and locks).
   */
  sync: 'always' | 'flush';
  /** Lock-owner suffix: the identity is `<hostname>_<unique_str>`. */
  unique_str?: string;
  /** rados_blocker: the pool (blockerm's holds maps and locks, blockerb's holds data objects). */
  pool?: string;
  /** rados_blocker: cephx client id without "client." (default "admin"). */
  cephx_id?: string;
  /** rados_blocker: path of ceph.conf (absolute once loaded); default: librados' search. */
  ceph_conf?: string;
  /** rados_blocker: keyring path, when ceph.conf does not name one (absolute once loaded). */
  keyring?: string;
  /** rados_blocker: RADOS namespace inside the pool. */
  namespace?: string;
  /** rados_blocker: seconds to wait for the cluster at start before failing (default 10). */
  connect_timeout?: number;
  /** rados_blocker: seconds an OSD operation may take before failing; 0 = wait (default 0). */
  op_timeout?: number;
}

export interface MapperdSection extends PeerSection {
  blockerb_port: number;
  blockerm_port: number;
  /** Seconds a write waits for another owner's volume lock. */
  lock_timeout: number;
  /**
   * Seconds of the lease a process holds a volume lock under (renewed every third of it; a
   * holder that cannot renew stops writing, and another host may take the lock over once it has
   * run out). 0: no lease (only for tests).
   */
  lease_timeout: number;
  /** Seconds between garbage collections mapperd runs (`vlmc gc`); 0: none (default). */
  gc_interval: number;
  /**
   * Seconds a gc leaves unreferenced objects alone after they were written (or after the oldest
   * producer under way started), so uploads and copy-ups are never raced (default 600).
   */
  gc_grace: number;
  /** Seconds a removed volume stays in the trash before gc collects it; 0: the next gc (default). */
  trash_ttl: number;
  /**
   * New maps leave map blocks of only zero entries out (header flag SPARSE; default true). `no`
   * writes every map block, as the original's mapper needs to read a map.
   */
  sparse_maps: boolean;
}

export interface VlmcdSection extends PeerSection {
  blocker_port: number;
  mapper_port: number;
}

export interface ArchipelagoConfig {
  ARCHIPELAGO: ArchipelagoSection;
  XSEG: XsegSection;
  PEERS: PeersSection;
  blockerb: BlockerSection;
  blockerm: BlockerSection;
  mapperd: MapperdSection;
  vlmcd: VlmcdSection;
  [section: string]: unknown;
}

/** Where the configuration came from. */
export type ConfigSource = 'flag' | 'env' | 'system' | 'default';

export interface LoadedConfig {
  /** Absolute path of the file that was read. */
  path: string;
  source: ConfigSource;
  /** True when this call created the embedded default file. */
  created: boolean;
  config: ArchipelagoConfig;
}

export interface LoadConfigOptions {
  /** Environment to read ARCHIPELAGO_CONF, XDG_DATA_HOME and HOME from (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** The system-wide path to look at (default /etc/archipelago/archipelago.conf). */
  systemPath?: string;
}

// ------------------------------------------------------------------------------------------------
// Keys and their types

type Kind = 'int' | 'number' | 'bool' | 'string' | 'umask';

/** Keys of the global sections. Python's ConfigParser matched option names case-insensitively. */
const GLOBAL_KEYS: Readonly<Record<string, Readonly<Record<string, Kind>>>> = {
  ARCHIPELAGO: { USER: 'string', GROUP: 'string', BLKTAP_ENABLED: 'bool', UMASK: 'umask', RUN_DIR: 'string' },
  XSEG: {
    SEGMENT_PORTS: 'int',
    SEGMENT_DYNPORTS: 'int',
    SEGMENT_SIZE: 'int',
    VTOOL_START: 'int',
    VTOOL_END: 'int',
    segment_type: 'string',
    segment_name: 'string',
    segment_alignment: 'int',
  },
  PEERS: { ROLES: 'string', ORDER: 'string' },
};

/** Keys every peer section may have (reference §5.2: "all"). `pidfile` is honoured for every role here. */
const COMMON_PEER_KEYS: Readonly<Record<string, Kind>> = {
  type: 'string',
  portno_start: 'int',
  portno_end: 'int',
  nr_ops: 'int',
  logfile: 'string',
  threshold: 'int',
  log_level: 'int',
  umask: 'umask',
  nr_threads: 'int',
  pidfile: 'string',
};

/** Keys of both blocker types. */
const BLOCKER_KEYS: Readonly<Record<string, Kind>> = { sync: 'string', unique_str: 'string' };

/** The keys each peer type adds to COMMON_PEER_KEYS (the guide and reference §5.2, per type). */
const TYPE_KEYS: Readonly<Record<string, Readonly<Record<string, Kind>>>> = {
  file_blocker: {
    ...BLOCKER_KEYS,
    archip_dir: 'string',
    lock_dir: 'string',
    fdcache: 'int',
    direct: 'bool',
    pithos_migrate: 'bool',
    prefix: 'string',
  },
  rados_blocker: {
    ...BLOCKER_KEYS,
    pool: 'string',
    cephx_id: 'string',
    ceph_conf: 'string',
    keyring: 'string',
    namespace: 'string',
    connect_timeout: 'number',
    op_timeout: 'number',
  },
  mapperd: {
    blockerb_port: 'int',
    blockerm_port: 'int',
    lock_timeout: 'number',
    lease_timeout: 'number',
    gc_interval: 'number',
    gc_grace: 'number',
    trash_ttl: 'number',
    sparse_maps: 'bool',
    unique_str: 'string',
  },
  vlmcd: { blocker_port: 'int', mapper_port: 'int' },
  poold: { logging_conf: 'string', socket_path: 'string' },
};

/** The peer types a role's `type` may name. */
export const PEER_TYPES: readonly string[] = Object.keys(TYPE_KEYS);

/** The roles of the original, known whether or not `[PEERS] ROLES` names them; their type when it is implied. */
const KNOWN_ROLES: Readonly<Record<string, string | undefined>> = {
  blockerb: undefined,
  blockerm: undefined,
  mapperd: 'mapperd',
  vlmcd: 'vlmcd',
  poold: 'poold',
};

/** Keys of the per-role sections (any role, any type): how a value is converted. */
const PEER_KEYS: Readonly<Record<string, Kind>> = Object.assign(
  {},
  COMMON_PEER_KEYS,
  ...Object.values(TYPE_KEYS),
);

/** The keys a section of peer type `type` may have; every peer key when the type is not known. */
function keysOfType(type: string | undefined): Readonly<Record<string, Kind>> {
  const t = type !== undefined ? TYPE_KEYS[type] : undefined;
  return t ? { ...COMMON_PEER_KEYS, ...t } : PEER_KEYS;
}

const TRUE_WORDS = new Set(['true', 'yes', 'on', '1']);
const FALSE_WORDS = new Set(['false', 'no', 'off', '0']);

/** Reads a umask the way Python's `int(x, 0)` does, also accepting a leading-zero octal (`022`). */
export function parseUmask(text: string): number | null {
  const t = text.trim().toLowerCase();
  let n: number;
  if (/^0o[0-7]+$/.test(t)) n = Number.parseInt(t.slice(2), 8);
  else if (/^0x[0-9a-f]+$/.test(t)) n = Number.parseInt(t.slice(2), 16);
  else if (/^0[0-7]+$/.test(t)) n = Number.parseInt(t, 8);
  else if (/^\d+$/.test(t)) n = Number.parseInt(t, 10);
  else return null;
  return n;
}

/** Converts an INI string to the key's type; leaves it alone when it does not convert (the schema then names it). */
function coerce(kind: Kind, v: unknown): unknown {
  if (typeof v === 'boolean') {
    // ini turns `true`/`false` into booleans itself.
    if (kind === 'bool') return v;
    if (kind === 'string') return String(v);
    return v;
  }
  if (typeof v !== 'string') return v;
  const t = v.trim();
  switch (kind) {
    case 'int':
      return /^[-+]?\d+$/.test(t) ? Number(t) : v;
    case 'number':
      return t !== '' && Number.isFinite(Number(t)) ? Number(t) : v;
    case 'bool': {
      const w = t.toLowerCase();
      if (TRUE_WORDS.has(w)) return true;
      if (FALSE_WORDS.has(w)) return false;
      return v;
    }
    case 'umask':
      return parseUmask(t) ?? v;
    case 'string':
      return t;
  }
}

/** Maps `name` to its canonical spelling among `known` (case-insensitive), else returns it unchanged. */
function canonical(name: string, known: readonly string[]): string {
  const l = name.toLowerCase();
  return known.find((k) => k.toLowerCase() === l) ?? name;
}

/** INI text → a plain object with canonical section/key names and typed values. */
export function deserializeConfig(text: string): Record<string, unknown> {
  const raw = ini.parse(text) as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [rawSection, body] of Object.entries(raw)) {
    const section = canonical(rawSection, Object.keys(GLOBAL_KEYS));
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      // A key outside any section.
      out[rawSection] = body;
      continue;
    }
    const keys = GLOBAL_KEYS[section] ?? PEER_KEYS;
    const known = Object.keys(keys);
    const sec: Record<string, unknown> = {};
    for (const [rawKey, value] of Object.entries(body as Record<string, unknown>)) {
      const key = canonical(rawKey, known);
      const kind = keys[key];
      sec[key] = kind ? coerce(kind, value) : value;
    }
    out[section] = sec;
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// The raw text: sections and keys that exist, once each

/** Levenshtein distance (insertions, deletions, substitutions), case-insensitive. */
function editDistance(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  let prev = Array.from({ length: y.length + 1 }, (_, j) => j);
  for (let i = 1; i <= x.length; i++) {
    const cur = [i];
    for (let j = 1; j <= y.length; j++)
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (x[i - 1] === y[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[y.length]!;
}

/** `; did you mean \`k\`?` for the closest of `known` (at most 2 edits, and fewer than half the name), else ''. */
export function didYouMean(name: string, known: readonly string[]): string {
  let best: string | undefined;
  let bestD = Number.POSITIVE_INFINITY;
  for (const k of known) {
    const d = editDistance(name, k);
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  if (best === undefined || bestD > 2 || bestD * 2 >= Math.max(name.length, best.length)) return '';
  return `; did you mean \`${best}\`?`;
}

interface RawSection {
  name: string;
  line: number;
  keys: Map<string, { key: string; value: string; line: number }>;
}

/**
 * Reads INI text line by line as the `ini` package does (`;`/`#` comments, `[section]`,
 * `key = value`), keeping line numbers and what `ini` merges silently: duplicate sections and
 * keys are problems here, as Python's ConfigParser (strict) made them.
 */
function rawSections(text: string, problems: string[]): RawSection[] {
  const out: RawSection[] = [];
  const seen = new Map<string, number>();
  let cur: RawSection | undefined;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = i + 1;
    const t = lines[i]!.trim();
    if (t === '' || t.startsWith(';') || t.startsWith('#')) continue;
    const sec = /^\[([^\]]*)\]\s*$/.exec(t);
    if (sec) {
      const name = canonical(sec[1]!.trim(), Object.keys(GLOBAL_KEYS));
      const first = seen.get(name);
      if (first !== undefined)
        problems.push(`line ${line}: duplicate section [${name}] (first at line ${first})`);
      else seen.set(name, line);
      cur = { name, line, keys: new Map() };
      out.push(cur);
      continue;
    }
    const eq = t.indexOf('=');
    const key = (eq < 0 ? t : t.slice(0, eq)).trim();
    const value = eq < 0 ? '' : t.slice(eq + 1).trim();
    if (cur === undefined) {
      problems.push(`line ${line}: key \`${key}\` is outside any section`);
      continue;
    }
    const l = key.toLowerCase();
    const dup = cur.keys.get(l);
    if (dup) problems.push(`line ${line}: duplicate key [${cur.name}] ${key} (first at line ${dup.line})`);
    else cur.keys.set(l, { key, value, line });
  }
  return out;
}

/**
 * Checks the raw text of a configuration file: every section is a global section, a role of
 * `[PEERS] ROLES` or a role of the original; every key is one its section (for a role: its type)
 * has; no section or key is given twice. Problems name the line, the section and the key, with
 * "did you mean" for a near miss. A key of the other blocker type (say `fdcache` in a
 * rados_blocker section) is a problem too: it would have no effect.
 */
export function lintConfigText(text: string): string[] {
  const problems: string[] = [];
  const sections = rawSections(text, problems);
  const peers = sections.find((s) => s.name === 'PEERS');
  const roles = (peers?.keys.get('roles')?.value ?? 'blockerb blockerm mapperd vlmcd')
    .split(/[\s,]+/)
    .filter((r) => r !== '');
  const knownSections = [...Object.keys(GLOBAL_KEYS), ...new Set([...roles, ...Object.keys(KNOWN_ROLES)])];
  for (const s of sections) {
    const global = GLOBAL_KEYS[s.name];
    let allowed: Readonly<Record<string, Kind>>;
    let what: string;
    if (global) {
      allowed = global;
      what = `[${s.name}]`;
    } else if (roles.includes(s.name) || s.name in KNOWN_ROLES) {
      const typeValue = s.keys.get('type')?.value;
      const type = typeValue ?? KNOWN_ROLES[s.name];
      // The schema names a wrong type of the four roles it knows (with the types they allow).
      if (type !== undefined && !PEER_TYPES.includes(type) && !(s.name in CONFIG_SCHEMA)) {
        problems.push(
          `line ${s.keys.get('type')?.line ?? s.line}: [${s.name}] type \`${type}\` is not a peer type (${PEER_TYPES.join(', ')})${didYouMean(type, PEER_TYPES)}`,
        );
        continue;
      }
      allowed = keysOfType(type);
      what = type !== undefined ? `[${s.name}] (type ${type})` : `[${s.name}]`;
    } else {
      problems.push(
        `line ${s.line}: unknown section [${s.name}]: not a global section, nor a role of [PEERS] ROLES (${roles.join(' ')})${didYouMean(s.name, knownSections)}`,
      );
      continue;
    }
    const names = Object.keys(allowed);
    for (const { key, line } of s.keys.values()) {
      if (names.some((k) => k.toLowerCase() === key.toLowerCase())) continue;
      const otherType = global
        ? undefined
        : PEER_TYPES.find((t) =>
            Object.keys(TYPE_KEYS[t]!).some((k) => k.toLowerCase() === key.toLowerCase()),
          );
      if (otherType !== undefined)
        problems.push(
          `line ${line}: ${what} ${key} is a key of type ${otherType} and has no effect here: remove it`,
        );
      else problems.push(`line ${line}: unknown key ${what} ${key}${didYouMean(key, names)}`);
    }
  }
  return problems;
}

/** A plain config object → INI text (booleans as True/False and umasks in octal, as Python wrote them). */
export function serializeConfig(value: Record<string, unknown>): string {
  const sections: Record<string, Record<string, unknown>> = {};
  for (const [name, body] of Object.entries(value)) {
    if (name === '__internal__' || typeof body !== 'object' || body === null) continue;
    const keys = GLOBAL_KEYS[name] ?? PEER_KEYS;
    const sec: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(body as Record<string, unknown>)) {
      if (v === undefined || v === null) continue;
      if (typeof v === 'boolean') sec[k] = v ? 'True' : 'False';
      else if (keys[k] === 'umask' && typeof v === 'number') sec[k] = `0o${v.toString(8).padStart(3, '0')}`;
      else sec[k] = v;
    }
    sections[name] = sec;
  }
  return `; Archipelago configuration (reference §5.2). Edit freely: vlmc reads it on every run.\n\n${ini.stringify(
    sections,
    { whitespace: true },
  )}`;
}

/** The embedded default configuration, keeping blocks and maps under `dataDir`. */
export function defaultConfig(dataDir: string): ArchipelagoConfig {
  return {
    ARCHIPELAGO: { USER: 'archipelago', GROUP: 'archipelago', BLKTAP_ENABLED: false, UMASK: 0o007 },
    XSEG: {
      SEGMENT_PORTS: 2048,
      SEGMENT_DYNPORTS: 1024,
      SEGMENT_SIZE: 2048,
      VTOOL_START: 1003,
      VTOOL_END: 1022,
    },
    PEERS: { ROLES: 'blockerb blockerm mapperd vlmcd' },
    blockerb: {
      type: 'file_blocker',
      portno_start: 1000,
      portno_end: 1000,
      nr_ops: 64,
      archip_dir: join(dataDir, 'blocks'),
      fdcache: 512,
      direct: false,
      sync: 'flush',
    },
    blockerm: {
      type: 'file_blocker',
      portno_start: 1002,
      portno_end: 1002,
      nr_ops: 64,
      archip_dir: join(dataDir, 'maps'),
      fdcache: 512,
      direct: false,
      sync: 'always',
    },
    mapperd: {
      type: 'mapperd',
      portno_start: 1001,
      portno_end: 1001,
      nr_ops: 512,
      blockerb_port: 1000,
      blockerm_port: 1002,
      lock_timeout: 30,
      lease_timeout: 15,
      gc_interval: 0,
      gc_grace: 600,
      trash_ttl: 0,
      sparse_maps: true,
    },
    vlmcd: {
      type: 'vlmcd',
      portno_start: 500,
      portno_end: 999,
      nr_ops: 512,
      blocker_port: 1000,
      mapper_port: 1001,
    },
  };
}

// ------------------------------------------------------------------------------------------------
// Resolution and loading

/** `$XDG_DATA_HOME/archipelago`, or `~/.local/share/archipelago`. */
export function dataDirectory(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_DATA_HOME;
  const base = xdg && isAbsolute(xdg) ? xdg : join(env.HOME || homedir(), '.local', 'share');
  return join(base, 'archipelago');
}

/** Which file would be used, and why, without reading it. */
export function resolveConfigPath(
  path?: string,
  opts: LoadConfigOptions = {},
): { path: string; source: ConfigSource } {
  const env = opts.env ?? process.env;
  if (path !== undefined && path !== '') return { path: resolve(path), source: 'flag' };
  const fromEnv = env[CONFIG_ENV];
  if (fromEnv) return { path: resolve(fromEnv), source: 'env' };
  const system = opts.systemPath ?? SYSTEM_CONFIG_PATH;
  if (existsSync(system)) return { path: system, source: 'system' };
  return { path: join(dataDirectory(env), 'archipelago.conf'), source: 'default' };
}

function configError(
  file: string,
  problems: string[],
  details: Record<string, unknown> = {},
): ArchipelagoError {
  return new ArchipelagoError('EINVAL_CONFIG', `${file}: ${problems.join('; ')}`, {
    details: { file, problems, ...details },
  });
}

/**
 * Loads and validates the configuration: the `-c` path when given, else ARCHIPELAGO_CONF, else
 * /etc/archipelago/archipelago.conf, else the embedded default (created if missing).
 */
export function loadConfig(path?: string, opts: LoadConfigOptions = {}): LoadedConfig {
  const where = resolveConfigPath(path, opts);
  const file = where.path;
  let created = false;
  let exists: boolean;
  try {
    exists = statSync(file).isFile();
    if (!exists) throw configError(file, ['not a regular file']);
  } catch (e) {
    if (ArchipelagoError.isInstance(e)) throw e;
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
      throw configError(file, [`cannot read it: ${String(e)}`]);
    exists = false;
  }
  if (!exists && where.source !== 'default') {
    const by = where.source === 'flag' ? '-c/--config' : CONFIG_ENV;
    throw new ArchipelagoError('EINVAL_CONFIG', `${file}: no such configuration file (named by ${by})`, {
      details: { file },
    });
  }
  if (exists) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw configError(file, [`cannot read it: ${String(e)}`]);
    }
    const problems = lintConfigText(text);
    if (problems.length > 0) throw configError(file, problems);
  }
  const ext = extname(file);
  let data: Record<string, unknown>;
  try {
    const store = new Conf<Record<string, unknown>>({
      cwd: dirname(file),
      configName: basename(file, ext),
      fileExtension: ext.replace(/^\./, ''),
      serialize: serializeConfig,
      deserialize: deserializeConfig,
      clearInvalidConfig: false,
      accessPropertiesByDotNotation: false,
      // Only a missing embedded default is written; an existing file is never rewritten.
      ...(exists ? {} : { defaults: defaultConfig(dirname(file)) as unknown as Record<string, unknown> }),
      configFileMode: 0o660,
    });
    created = !exists;
    data = store.store;
    checkSchema(data);
  } catch (e) {
    throw translateConfError(file, e, () => deserializeConfig(readFileSync(file, 'utf8')));
  }
  const config = data as unknown as ArchipelagoConfig;
  const problems = checkSemantics(config);
  if (problems.length > 0) throw configError(file, problems);
  resolveDirs(config, dirname(file));
  return { path: file, source: where.source, created, config };
}

type GeneratedValidator = ((data: unknown) => boolean) & {
  errors?: { instancePath: string; message?: string }[] | null;
};

/**
 * Validates (and fills in defaults, as conf's ajv would) with the validator generated from
 * CONFIG_ROOT_SCHEMA; throws conf's "Config schema violation" message on failure.
 */
function checkSchema(data: Record<string, unknown>): void {
  const validate = generatedValidate as unknown as GeneratedValidator;
  if (validate(data)) return;
  const errors = (validate.errors ?? []).map((e) => `\`${e.instancePath.slice(1)}\` ${e.message ?? ''}`);
  throw new Error(`Config schema violation: ${errors.join('; ')}`);
}

/** Turns conf's "Config schema violation: `a/b` must be ..." into "a.b must be ..." lines. */
function translateConfError(
  file: string,
  e: unknown,
  reread: () => Record<string, unknown>,
): ArchipelagoError {
  if (ArchipelagoError.isInstance(e)) return e;
  const msg = e instanceof Error ? e.message : String(e);
  const prefix = 'Config schema violation: ';
  if (!msg.startsWith(prefix)) return configError(file, [`cannot read it: ${msg}`]);
  const problems: string[] = [];
  const keys: string[] = [];
  let raw: Record<string, unknown> | null = null;
  const valueAt = (path: string[]): unknown => {
    try {
      raw ??= reread();
    } catch {
      return undefined;
    }
    let v: unknown = raw;
    for (const p of path)
      v = typeof v === 'object' && v !== null ? (v as Record<string, unknown>)[p] : undefined;
    return typeof v === 'object' ? undefined : v;
  };
  for (const part of msg.slice(prefix.length).split('; ')) {
    const m = /^`([^`]*)` (.*)$/.exec(part);
    if (!m) {
      problems.push(part);
      continue;
    }
    const path = m[1]!.split('/').filter((p) => p !== '');
    const text = m[2]!;
    if (/^must match "(then|else)" schema$/.test(text)) continue; // the `required` error says it better
    const req = /^must have required property '(.+)'$/.exec(text);
    if (req) {
      if (path.length === 0) problems.push(`section [${req[1]}] is missing`);
      else problems.push(`${[...path, req[1]].join('.')} is missing`);
      keys.push([...path, req[1]].join('.'));
      continue;
    }
    const key = path.join('.');
    keys.push(key);
    let detail = text;
    if (text === 'must be equal to one of the allowed values')
      detail = `must be one of ${allowedValues(path).join(', ')}`;
    const got = valueAt(path);
    problems.push(`${key} ${detail}${got === undefined ? '' : ` (got ${JSON.stringify(got)})`}`);
  }
  return configError(file, problems, { keys });
}

function allowedValues(path: string[]): string[] {
  let s: unknown = CONFIG_SCHEMA;
  for (const p of path) {
    const node = s as Record<string, unknown> | undefined;
    s = (node?.properties as Record<string, unknown> | undefined)?.[p] ?? node?.[p];
  }
  const e = (s as { enum?: unknown[] } | undefined)?.enum;
  return Array.isArray(e) ? e.map(String) : ['?'];
}

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

const words = (v: string): string[] => v.split(/[\s,]+/).filter((r) => r !== '');

/** The roles of `[PEERS] ROLES`, in their written order. */
export function rolesOf(c: ArchipelagoConfig): string[] {
  return words(String(c.PEERS.ROLES ?? ''));
}

/**
 * The order the peers start in: `[PEERS] ORDER` when set (the loader checked that it names each
 * role of ROLES once), else ROLES. They stop in the reverse order.
 */
export function startOrder(c: ArchipelagoConfig): string[] {
  const order = c.PEERS.ORDER;
  return typeof order === 'string' && words(order).length > 0 ? words(order) : rolesOf(c);
}

/** Checks a JSON schema cannot express. Returns one problem per line, naming the key. */
export function checkSemantics(c: ArchipelagoConfig): string[] {
  const out: string[] = [];
  const x = c.XSEG;
  if (x.SEGMENT_DYNPORTS > x.SEGMENT_PORTS) {
    out.push(
      `XSEG.SEGMENT_DYNPORTS (${x.SEGMENT_DYNPORTS}) must not exceed XSEG.SEGMENT_PORTS (${x.SEGMENT_PORTS})`,
    );
  }
  const roles = rolesOf(c);
  const peers = new Set<string>(['blockerb', 'blockerm', 'mapperd', 'vlmcd', ...roles]);
  if (c.PEERS.ORDER !== undefined) {
    const order = words(String(c.PEERS.ORDER));
    const missing = roles.filter((r) => !order.includes(r));
    const extra = order.filter((r) => !roles.includes(r));
    const twice = order.filter((r, i) => order.indexOf(r) !== i);
    const why = [
      ...(missing.length ? [`leaves out ${missing.join(', ')}`] : []),
      ...(extra.length ? [`names ${extra.join(', ')}, not in PEERS.ROLES`] : []),
      ...(twice.length ? [`names ${[...new Set(twice)].join(', ')} twice`] : []),
    ];
    if (why.length > 0)
      out.push(
        `PEERS.ORDER (${order.join(' ')}) must name each role of PEERS.ROLES (${roles.join(' ')}) once: it ${why.join(' and ')}`,
      );
  }
  for (const r of roles) {
    if (typeof c[r] !== 'object' || c[r] === null)
      out.push(`PEERS.ROLES names "${r}" but there is no [${r}] section`);
  }
  for (const role of ['blockerb', 'blockerm'] as const) {
    const b = c[role];
    if (b.type === 'file_blocker' && b.archip_dir === undefined)
      out.push(`${role}.archip_dir is missing (type file_blocker needs it)`);
    if (b.type === 'rados_blocker' && b.pool === undefined)
      out.push(`${role}.pool is missing (type rados_blocker needs it)`);
  }
  const ranges: Array<{ owner: string; start: number; end: number }> = [];
  if (x.VTOOL_START > x.VTOOL_END)
    out.push(`XSEG.VTOOL_START (${x.VTOOL_START}) is after XSEG.VTOOL_END (${x.VTOOL_END})`);
  else if (x.VTOOL_END >= x.SEGMENT_PORTS) {
    out.push(`XSEG.VTOOL_END (${x.VTOOL_END}) must be below XSEG.SEGMENT_PORTS (${x.SEGMENT_PORTS})`);
  } else ranges.push({ owner: 'XSEG.VTOOL_START..VTOOL_END', start: x.VTOOL_START, end: x.VTOOL_END });

  for (const name of peers) {
    const s = c[name] as Partial<PeerSection> | undefined;
    if (typeof s !== 'object' || s === null) continue;
    if (typeof s.nr_ops === 'number' && !isPowerOfTwo(s.nr_ops)) {
      out.push(`${name}.nr_ops must be a power of two (got ${s.nr_ops})`);
    }
    const { portno_start: a, portno_end: b } = s;
    if (typeof a !== 'number' || typeof b !== 'number') continue;
    if (a > b) {
      out.push(`${name}.portno_start (${a}) is after ${name}.portno_end (${b})`);
      continue;
    }
    if (b >= x.SEGMENT_PORTS) {
      out.push(`${name}.portno_end (${b}) must be below XSEG.SEGMENT_PORTS (${x.SEGMENT_PORTS})`);
      continue;
    }
    for (const r of ranges) {
      if (a <= r.end && r.start <= b) {
        out.push(`${name}.portno_start..portno_end (${a}-${b}) overlaps ${r.owner} (${r.start}-${r.end})`);
      }
    }
    ranges.push({ owner: `${name}.portno_start..portno_end`, start: a, end: b });
  }

  const within = (key: string, value: number, peer: string) => {
    const p = c[peer] as Partial<PeerSection> | undefined;
    if (!p || typeof p.portno_start !== 'number' || typeof p.portno_end !== 'number') return;
    if (value < p.portno_start || value > p.portno_end) {
      out.push(`${key} (${value}) is not a port of [${peer}] (${p.portno_start}-${p.portno_end})`);
    }
  };
  within('mapperd.blockerb_port', c.mapperd.blockerb_port, 'blockerb');
  within('mapperd.blockerm_port', c.mapperd.blockerm_port, 'blockerm');
  within('vlmcd.blocker_port', c.vlmcd.blocker_port, 'blockerb');
  within('vlmcd.mapper_port', c.vlmcd.mapper_port, 'mapperd');
  return out;
}

/** Makes relative blocker directories relative to the configuration file's directory. */
function resolveDirs(c: ArchipelagoConfig, base: string): void {
  for (const b of [c.blockerb, c.blockerm]) {
    if (b.archip_dir !== undefined) b.archip_dir = resolve(base, b.archip_dir);
    if (b.lock_dir !== undefined) b.lock_dir = resolve(base, b.lock_dir);
    if (b.ceph_conf !== undefined) b.ceph_conf = resolve(base, b.ceph_conf);
    if (b.keyring !== undefined) b.keyring = resolve(base, b.keyring);
  }
}

/** Why each key that is accepted but has no effect here has none (see `configNotices`). */
export const NO_EFFECT: Readonly<Record<string, string>> = {
  BLKTAP_ENABLED:
    'there is no Xen blktap here: volumes are exposed through NBD (vlmc map), and vlmc runs whatever BLKTAP_ENABLED says',
  segment_alignment: 'the segment aligns itself (pages of 4 KiB, request data on 64 bytes)',
  threshold:
    'peers do not spin a fixed number of loops before sleeping: they sleep until a request wakes them (bounded adaptive spins, see ARCHIPELAGO_XSEG_SPIN_US)',
  pithos_migrate:
    'the old Pithos path layout (<dir>/<n0n1>/<n2n3>/<n4n5>/<name>) is not read here: objects live only in the hashed layout',
  prefix:
    'checked (at most 10 of [A-Za-z0-9._-]); the original only used it to refuse object names shorter than prefix+6 characters, and every object name here is longer',
};

/**
 * One line per key the file sets that has no effect here, naming the section, the key and why:
 * `BLKTAP_ENABLED = True`, `segment_alignment`, `threshold`, `pithos_migrate = True`, `prefix`.
 * `archipelago start` prints them once, on stderr; embedded commands may do the same.
 */
export function configNotices(loaded: LoadedConfig | ArchipelagoConfig): string[] {
  const c = configOf(loaded);
  const out: string[] = [];
  const say = (section: string, key: string) =>
    out.push(`[${section}] ${key}: no effect here: ${NO_EFFECT[key]}`);
  if (c.ARCHIPELAGO?.BLKTAP_ENABLED === true) say('ARCHIPELAGO', 'BLKTAP_ENABLED');
  if (c.XSEG?.segment_alignment !== undefined) say('XSEG', 'segment_alignment');
  for (const [name, body] of Object.entries(c)) {
    if (name in GLOBAL_KEYS || typeof body !== 'object' || body === null) continue;
    const sec = body as Record<string, unknown>;
    if (sec.threshold !== undefined) say(name, 'threshold');
    if (sec.pithos_migrate === true) say(name, 'pithos_migrate');
    if (sec.prefix !== undefined) say(name, 'prefix');
  }
  return out;
}

/** True for a loaded configuration (file path and contents), false for bare contents. */
export function isLoaded(v: LoadedConfig | ArchipelagoConfig): v is LoadedConfig {
  return typeof (v as LoadedConfig).path === 'string' && typeof (v as LoadedConfig).config === 'object';
}

/** The contents of a loaded configuration, or the contents given. */
export function configOf(v: LoadedConfig | ArchipelagoConfig): ArchipelagoConfig {
  return isLoaded(v) ? v.config : v;
}
