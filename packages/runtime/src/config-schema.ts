/**
 * The JSON schema of archipelago.conf (one entry per section), as data with no imports: the
 * validator generated from it (config-validate.generated.ts) is what `vlmc` runs, and the
 * generator must be able to load the schema without loading that validator.
 */
/** Ports are below SEGMENT_PORTS, at most 65536 (the segment's limit). */
const port = { type: 'integer', minimum: 0, maximum: 65535 } as const;
/** The longest timeouts (seconds) a peer accepts: an hour to connect, a day for the others. */
const MAX_CONNECT_SECONDS = 3600;
const MAX_SECONDS = 86_400;

function peerSchema(
  type: readonly string[],
  start: number,
  end: number,
  nrOps: number,
  extra: Record<string, unknown>,
) {
  return {
    type: 'object',
    properties: {
      type: { type: 'string', enum: type, ...(type.length === 1 ? { default: type[0] } : {}) },
      portno_start: { ...port, default: start },
      portno_end: { ...port, default: end },
      nr_ops: { type: 'integer', minimum: 1, maximum: 65536, default: nrOps },
      log_level: { type: 'integer', minimum: 0, maximum: 3 },
      umask: { type: 'integer', minimum: 0, maximum: 0o777 },
      nr_threads: { type: 'integer', minimum: 1, maximum: 1024 },
      logfile: { type: 'string' },
      threshold: { type: 'integer', minimum: 0, maximum: 2147483647 },
      ...extra,
    },
  } as const;
}

const blockerExtra = {
  archip_dir: { type: 'string', minLength: 1 },
  lock_dir: { type: 'string', minLength: 1 },
  fdcache: { type: 'integer', minimum: 2, maximum: 1048576, default: 512 },
  direct: { type: 'boolean', default: false },
  pithos_migrate: { type: 'boolean' },
  unique_str: { type: 'string', minLength: 1, maxLength: 128 },
  prefix: { type: 'string', pattern: '^[A-Za-z0-9._-]{0,10}$' },
  pool: { type: 'string', minLength: 1 },
  cephx_id: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,64}$' },
  ceph_conf: { type: 'string', minLength: 1 },
  keyring: { type: 'string', minLength: 1 },
  namespace: { type: 'string', pattern: '^[A-Za-z0-9._-]{0,64}$' },
  connect_timeout: { type: 'number', exclusiveMinimum: 0, maximum: MAX_CONNECT_SECONDS },
  op_timeout: { type: 'number', minimum: 0, maximum: MAX_SECONDS },
};

/**
 * `sync` defaults by role: blockerb (data) writes back, as NBD's contract allows and qemu-nbd,
 * nbdkit and rbd-nbd do (a write is durable after FLUSH or with FUA); blockerm (maps, locks)
 * makes every write durable before it is acknowledged.
 */
function blockerSchema(portno: number, sync: 'always' | 'flush') {
  const s = peerSchema(['file_blocker', 'rados_blocker'], portno, portno, 64, {
    ...blockerExtra,
    sync: { type: 'string', enum: ['always', 'flush'], default: sync },
  });
  // Which of archip_dir and pool is needed depends on the type: see checkSemantics.
  return { ...s, required: ['type'] };
}

/** The JSON schema `conf` validates the file against (one entry per section). */
export const CONFIG_SCHEMA = {
  ARCHIPELAGO: {
    type: 'object',
    default: {},
    properties: {
      USER: { type: 'string', minLength: 1, default: 'archipelago' },
      GROUP: { type: 'string', minLength: 1, default: 'archipelago' },
      BLKTAP_ENABLED: { type: 'boolean', default: false },
      UMASK: { type: 'integer', minimum: 0, maximum: 0o777, default: 0o007 },
      RUN_DIR: { type: 'string', minLength: 1 },
    },
  },
  XSEG: {
    type: 'object',
    default: {},
    properties: {
      SEGMENT_PORTS: { type: 'integer', minimum: 2, maximum: 65536, default: 2048 },
      SEGMENT_DYNPORTS: { type: 'integer', minimum: 1, maximum: 65535, default: 1024 },
      // MiB: the segment's heap is 1 MiB to 1 TiB.
      SEGMENT_SIZE: { type: 'integer', minimum: 1, maximum: 1048576, default: 2048 },
      VTOOL_START: { ...port, default: 1003 },
      VTOOL_END: { ...port, default: 1022 },
      segment_alignment: { type: 'integer', minimum: 0, maximum: 64 },
      // Only POSIX shared memory; the name is a file in /dev/shm.
      segment_type: { type: 'string', enum: ['posix'] },
      segment_name: { type: 'string', pattern: '^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$' },
    },
  },
  PEERS: {
    type: 'object',
    default: {},
    properties: {
      ROLES: { type: 'string', minLength: 1, default: 'blockerb blockerm mapperd vlmcd' },
      ORDER: { type: 'string' },
    },
  },
  blockerb: blockerSchema(1000, 'flush'),
  blockerm: blockerSchema(1002, 'always'),
  mapperd: {
    default: {},
    ...peerSchema(['mapperd'], 1001, 1001, 512, {
      blockerb_port: { ...port, default: 1000 },
      blockerm_port: { ...port, default: 1002 },
      lock_timeout: { type: 'number', exclusiveMinimum: 0, maximum: MAX_SECONDS, default: 30 },
      lease_timeout: { type: 'number', minimum: 0, maximum: MAX_SECONDS, default: 15 },
      gc_interval: { type: 'number', minimum: 0, maximum: MAX_SECONDS * 365, default: 0 },
      gc_grace: { type: 'number', minimum: 0, maximum: MAX_SECONDS * 365, default: 600 },
      trash_ttl: { type: 'number', minimum: 0, maximum: MAX_SECONDS * 3650, default: 0 },
      sparse_maps: { type: 'boolean', default: true },
    }),
  },
  vlmcd: {
    default: {},
    ...peerSchema(['vlmcd'], 500, 999, 512, {
      blocker_port: { ...port, default: 1000 },
      mapper_port: { ...port, default: 1001 },
    }),
  },
} as const;

/** Sections every file must have: the blockers say where the data lives. */
const REQUIRED_SECTIONS = ['blockerb', 'blockerm'];

/** The whole file's schema, as conf would build it from CONFIG_SCHEMA (see config-validator-source.ts). */
export const CONFIG_ROOT_SCHEMA = {
  required: REQUIRED_SECTIONS,
  type: 'object',
  properties: CONFIG_SCHEMA,
} as const;
