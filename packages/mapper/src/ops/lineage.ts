/**
 * Lineage, recorded (README "Lineage, rollback, flatten"): every clone, snapshot and new volume
 * gets a lineage record in a sidecar object of blockerm (`lineageObjectName`, mapfile FORMAT.md),
 * written before the map's header, so the header commits both (a crash before it leaves a record
 * under a name with no live map, which nothing reads and the next map of that name replaces).
 * Records refer to other maps by name and by record id, and a rename moves the record (keeping its
 * id), so references survive renames. A map without a record (made by an older version, or by the
 * original mapper) is "not recorded": readers fall back to inference.
 */

import { randomBytes } from 'node:crypto';
import type { Blocker } from '@archipelago/blocker';
import {
  decodeLineage,
  encodeLineage,
  type LineageRecord,
  lineageObjectName,
  validateVolumeName,
} from '@archipelago/mapfile';
import type { MapperApi } from '../api.js';
import type { VolumeSummary } from '../types.js';
import { parseTrashName } from './trash.js';

export type { LineageRecord } from '@archipelago/mapfile';

/** A fresh record id: 16 hex digits. */
export function newLineageId(): string {
  return randomBytes(8).toString('hex');
}

/** The lineage record of map `name`, or null when none is stored (or it is unreadable). */
export async function readLineage(
  blockerm: Pick<Blocker, 'info' | 'read'>,
  name: string,
): Promise<LineageRecord | null> {
  const obj = lineageObjectName(name);
  const info = await blockerm.info(obj);
  if (!info || info.size === 0) return null;
  return decodeLineage(await blockerm.read(obj, 0, info.size, { missingOk: true }));
}

/** Stores `rec` as the lineage record of map `name` (replacing any). */
export function writeLineage(
  blockerm: Pick<Blocker, 'writeFull'>,
  name: string,
  rec: LineageRecord,
): Promise<void> {
  return blockerm.writeFull(lineageObjectName(name), encodeLineage(rec));
}

/** Deletes the lineage record of map `name`, if any. */
export async function dropLineage(blockerm: Pick<Blocker, 'delete'>, name: string): Promise<void> {
  await blockerm.delete(lineageObjectName(name));
}

/** What the lineage queries read: the live maps, and their records in blockerm. */
export interface LineageSource {
  readonly mapper: Pick<MapperApi, 'list'>;
  readonly blockerm: Pick<Blocker, 'info' | 'read' | 'list'>;
}

/** Another map as a map's lineage names it now: `removed` when no live map has that record id (or name). */
export interface LineageLink {
  name: string;
  removed: boolean;
}

/** A map's lineage, from its record (`recorded`), else nothing (callers infer). */
export interface MapLineage {
  name: string;
  readonly: boolean;
  recorded: boolean;
  /** The record's id (null: not recorded). */
  id: string | null;
  /** A volume's parent snapshot (null: none; undefined: not recorded). */
  parent?: LineageLink | null;
  /** A clone that `vlmc flatten` made independent. */
  flattened?: boolean;
  /** A snapshot's volume and that volume's epoch when it was taken. */
  origin?: (LineageLink & { epoch: bigint }) | null;
}

/** One snapshot of a volume, in order (`snapshotsOf`). */
export interface SnapshotEntry {
  name: string;
  /** 1 for the oldest live snapshot of the volume. */
  ordinal: number;
  /** The volume's epoch when the snapshot was taken (its position in the volume's history). */
  epoch: bigint;
  size: number;
  /** When it was taken, ms since the epoch (0: unknown). */
  created: number;
}

/** The live maps and their records, with records indexed by id. */
interface Index {
  maps: Map<string, VolumeSummary>;
  records: Map<string, LineageRecord | null>;
  byId: Map<string, string>;
  /** Record ids of removed maps whose records are still stored, to their last names. */
  removedById: Map<string, string>;
}

const SUFFIX = lineageObjectName('');

async function index(src: LineageSource): Promise<Index> {
  const maps = new Map<string, VolumeSummary>();
  for (const v of await src.mapper.list()) if (!v.incomplete) maps.set(v.name, v);
  const records = new Map<string, LineageRecord | null>();
  const byId = new Map<string, string>();
  await Promise.all(
    [...maps.keys()].map(async (name) => {
      const rec = await readLineage(src.blockerm, name).catch(() => null);
      records.set(name, rec);
    }),
  );
  for (const [name, rec] of records) if (rec) byId.set(rec.id, name);
  // Records that outlive their maps (remove keeps them) tell the last name of a removed map (a
  // user's name: not an internal one, such as a trash entry's, when a record moved there).
  // A record in the trash (remove moved it with its map) names the map by the name it was
  // removed under, and wins over an older name's leftover record.
  const removedById = new Map<string, string>();
  const fromTrash = new Set<string>();
  for await (const obj of src.blockerm.list()) {
    if (!obj.endsWith(SUFFIX)) continue;
    const stored = obj.slice(0, -SUFFIX.length);
    if (maps.has(stored)) continue;
    const trashed = parseTrashName(stored);
    if (!trashed && !isVolumeName(stored)) continue;
    const rec = await readLineage(src.blockerm, stored).catch(() => null);
    if (!rec || byId.has(rec.id) || (!trashed && fromTrash.has(rec.id))) continue;
    removedById.set(rec.id, trashed ? trashed.name : stored);
    if (trashed) fromTrash.add(rec.id);
  }
  return { maps, records, byId, removedById };
}

function isVolumeName(name: string): boolean {
  try {
    validateVolumeName(name);
    return true;
  } catch {
    return false;
  }
}

/** Where a reference points now: the live map with its id (renamed or not), else its name, removed. */
function resolve(ix: Index, ref: { name: string; id: string | null }): LineageLink {
  if (ref.id !== null) {
    const now = ix.byId.get(ref.id);
    if (now !== undefined) return { name: now, removed: false };
    return { name: ix.removedById.get(ref.id) ?? ref.name, removed: true };
  }
  return { name: ref.name, removed: !ix.maps.has(ref.name) };
}

function lineageOf(ix: Index, name: string): MapLineage {
  const v = ix.maps.get(name);
  const rec = ix.records.get(name) ?? null;
  const out: MapLineage = {
    name,
    readonly: v?.readonly ?? false,
    recorded: rec !== null,
    id: rec?.id ?? null,
  };
  if (!rec) return out;
  if (rec.parent !== undefined) out.parent = rec.parent === null ? null : resolve(ix, rec.parent);
  if (rec.flattened) out.flattened = true;
  if (rec.origin !== undefined)
    out.origin = rec.origin === null ? null : { ...resolve(ix, rec.origin), epoch: rec.origin.epoch };
  return out;
}

/**
 * The recorded lineage of live map `name` (ENOENT_VOLUME-free: an unknown name reads as not recorded).
 * The common case reads only the map, its record and the maps it names (`vlmc info` costs the same
 * with 10 or 10,000 volumes); a reference that may have moved (renamed, removed) looks the ids up
 * in the whole store.
 */
export async function mapLineage(src: LineageSource, name: string): Promise<MapLineage> {
  const direct = await lineageDirect(src, name).catch(() => null);
  return direct ?? lineageOf(await index(src), name);
}

type InfoSource = Pick<MapperApi, 'info'>;

/** `ref` resolved without the index: null when only the index can say (the map there carries another id). */
async function linkDirect(
  mapper: InfoSource,
  src: LineageSource,
  ref: { name: string; id: string | null },
): Promise<LineageLink | null> {
  let live: boolean;
  try {
    live = !(await mapper.info(ref.name)).incomplete;
  } catch (e) {
    if ((e as { code?: string }).code !== 'ENOENT_VOLUME') throw e;
    live = false;
  }
  if (ref.id === null) return { name: ref.name, removed: !live };
  if (!live) return null; // renamed away or removed: its id may live on under another name
  const rec = await readLineage(src.blockerm, ref.name);
  return rec?.id === ref.id ? { name: ref.name, removed: false } : null;
}

async function lineageDirect(src: LineageSource, name: string): Promise<MapLineage | null> {
  const m = src.mapper as Partial<InfoSource>;
  if (typeof m.info !== 'function') return null;
  const mapper: InfoSource = { info: (n, o) => (m.info as InfoSource['info']).call(src.mapper, n, o) };
  const notLive: MapLineage = { name, readonly: false, recorded: false, id: null };
  let info: Awaited<ReturnType<InfoSource['info']>>;
  try {
    info = await mapper.info(name);
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOENT_VOLUME') return notLive;
    throw e;
  }
  if (info.incomplete) return notLive; // as the index has it: only complete maps are live
  const rec = await readLineage(src.blockerm, name);
  const out: MapLineage = { name, readonly: info.readonly, recorded: rec !== null, id: rec?.id ?? null };
  if (!rec) return out;
  if (rec.parent !== undefined) {
    if (rec.parent === null) out.parent = null;
    else {
      const p = await linkDirect(mapper, src, rec.parent);
      if (!p) return null;
      out.parent = p;
    }
  }
  if (rec.flattened) out.flattened = true;
  if (rec.origin !== undefined) {
    if (rec.origin === null) out.origin = null;
    else {
      const o = await linkDirect(mapper, src, rec.origin);
      if (!o) return null;
      out.origin = { ...o, epoch: rec.origin.epoch };
    }
  }
  return out;
}

/** The live snapshots recorded as taken of volume `vol` (under any of its names), oldest first. */
export async function snapshotsOf(src: LineageSource, vol: string): Promise<SnapshotEntry[]> {
  const ix = await index(src);
  const out: Omit<SnapshotEntry, 'ordinal'>[] = [];
  for (const [name, v] of ix.maps) {
    if (!v.readonly) continue;
    const rec = ix.records.get(name);
    if (!rec?.origin) continue;
    const at = resolve(ix, rec.origin);
    if (at.removed || at.name !== vol) continue;
    out.push({ name, epoch: rec.origin.epoch, size: v.size, created: rec.created });
  }
  out.sort((a, b) => (a.epoch < b.epoch ? -1 : a.epoch > b.epoch ? 1 : a.created - b.created));
  return out.map((s, i) => ({ ...s, ordinal: i + 1 }));
}

/** The live volumes recorded as clones of snapshot `snap` (not flattened since), by name. */
export async function childrenOf(src: LineageSource, snap: string): Promise<string[]> {
  const ix = await index(src);
  const out: string[] = [];
  for (const [name] of ix.maps) {
    const rec = ix.records.get(name);
    if (!rec?.parent) continue;
    const at = resolve(ix, rec.parent);
    if (!at.removed && at.name === snap) out.push(name);
  }
  return out.sort();
}
