/**
 * Lineage records (FORMAT.md, "Lineage record"): where a map comes from, kept in a small sidecar
 * object next to its header, because the v2 header is fixed. A missing or unreadable record means
 * "not recorded" (maps of older versions or of the original mapper): readers infer instead.
 */
import { hex16 } from './names.js';

/** First four bytes of a lineage record: ASCII "LNG1". */
export const LINEAGE_MAGIC = 'LNG1';

/** Map-block id that no map reaches (a map holds at most 2^53 / 256 entries): the lineage sidecar's. */
const LINEAGE_ID = 0xffffffffffffffffn;
/** The same, one lower: where a rollback stages the entries it commits. */
const ROLLBACK_ID = 0xfffffffffffffffen;

/**
 * The sidecar object holding map `name`'s lineage record: `<name>_ffffffffffffffff`. It cannot be
 * a volume name (those never end in `_` and 16 hex digits), nor a map block of another map (that
 * would be one of `name`'s own, at an id no map reaches), nor a data object (`<vol>_<e>_<i>` with
 * `<vol>` a volume name), nor a lock (`_lock`). `vlmc ls` skips it like a map block.
 */
export function lineageObjectName(name: string): string {
  return `${name}_${hex16(LINEAGE_ID)}`;
}

/** The map a rollback of `name` stages its new entries in (`<name>_fffffffffffffffe`, INCOMPLETE). */
export function rollbackMapName(name: string): string {
  return `${name}_${hex16(ROLLBACK_ID)}`;
}

/** Another map, as a lineage record names it: its name then, and its record id (null: not recorded). */
export interface LineageRef {
  name: string;
  id: string | null;
}

export interface LineageRecord {
  /** Stable id of the map (16 hex digits): a rename keeps it, so references survive renames. */
  id: string;
  /**
   * A clone's source snapshot; null: none (an empty volume, a flattened clone); undefined: not
   * known (recorded later than the map was made, e.g. the origin of a snapshot of an old volume).
   */
  parent?: LineageRef | null;
  /** The clone was flattened (`vlmc flatten`): it depends on no snapshot any more. */
  flattened?: boolean;
  /** A snapshot's volume, and that volume's epoch when the snapshot was taken (its position). */
  origin?: (LineageRef & { epoch: bigint }) | null;
  /** When the map was made, ms since the epoch. */
  created: number;
}

const ID = /^[0-9a-f]{16}$/;

/** Encodes a record: "LNG1" then JSON (epochs as decimal strings). */
export function encodeLineage(rec: LineageRecord): Buffer {
  if (!ID.test(rec.id)) throw new RangeError(`encodeLineage: bad id "${rec.id}"`);
  const json = JSON.stringify(rec, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
  return Buffer.concat([Buffer.from(LINEAGE_MAGIC, 'latin1'), Buffer.from(json, 'utf8')]);
}

function ref(v: unknown): LineageRef | null | undefined {
  if (v === undefined) return undefined;
  if (v === null) return null;
  if (typeof v !== 'object') return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o.name !== 'string') return undefined;
  return { name: o.name, id: typeof o.id === 'string' && ID.test(o.id) ? o.id : null };
}

/** Decodes a record; null for anything that is not one (no magic, bad JSON, no id). */
export function decodeLineage(buf: Uint8Array): LineageRecord | null {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 4 || b.toString('latin1', 0, 4) !== LINEAGE_MAGIC) return null;
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(b.toString('utf8', 4).replace(/\0+$/, ''));
  } catch {
    return null;
  }
  if (!o || typeof o !== 'object' || typeof o.id !== 'string' || !ID.test(o.id)) return null;
  const rec: LineageRecord = { id: o.id, created: typeof o.created === 'number' ? o.created : 0 };
  const parent = ref(o.parent);
  if (parent !== undefined) rec.parent = parent;
  if (o.flattened === true) rec.flattened = true;
  if (o.origin === null) rec.origin = null;
  else {
    const origin = ref(o.origin);
    const epoch = (o.origin as { epoch?: unknown } | undefined)?.epoch;
    if (origin && typeof epoch === 'string' && /^[0-9]+$/.test(epoch))
      rec.origin = { ...origin, epoch: BigInt(epoch) };
  }
  return rec;
}
