/**
 * The volume operations of `vlmc`, as functions of a `Session`: each is what one command does,
 * in either wiring, reaching a mapped volume through its holder. The commands parse flags, call
 * one of these and print the result.
 */

import type { Blocker } from '@archipelago/blocker';
import { dirSpace } from '@archipelago/blocker-file';
import { ArchipelagoError } from '@archipelago/libxseg';
import { DEFAULT_BLOCKSIZE, ObjFlag, validateVolumeName, ZERO_BLOCK } from '@archipelago/mapfile';
import {
  checkMapSpace,
  childrenOf,
  collectGarbage,
  type FlattenResult,
  type GcProgress,
  type GcReport,
  type LoadOptions,
  type MapperApi,
  mapLineage,
  type SnapshotEntry,
  sharedBlocks,
  snapshotsOf,
  type TrashEntry,
  type VolumeInfo,
  type VolumeSummary,
} from '@archipelago/mapper';
import { openBlocker } from './embedded.js';
import { callControl } from './endpoint/control.js';
import type { MappedStatus } from './endpoint/runstate.js';
import { blockerOptions } from './sections.js';
import type { Session } from './session.js';
import {
  DEFAULT_IMPORT_INFLIGHT,
  DEFAULT_INFLIGHT,
  exportVolume,
  exportVolumeToStream,
  importFile,
  importStream,
  type TransferOptions,
  type TransferStats,
} from './transfer.js';

/** The mapper reports the lock it held during an operation; this is the owner once it is over. */
async function settled(s: Session, v: VolumeInfo): Promise<VolumeInfo> {
  const rt = await s.runtime();
  return { ...v, lockOwner: await rt.blockerm.lockOwner(v.name) };
}

/**
 * A new empty volume of `size` bytes, or with `snap` a thin clone of that snapshot. Refused with
 * ENOSPC, before anything is written, when blockerm has no room for the map (the mapper checks
 * where it can see its blocker's free space; in the daemon wiring a file blockerm's directory is
 * checked here, as mapperd reaches blockerm over the segment).
 */
export async function createVolume(
  s: Session,
  name: string,
  opts: { size?: number; snap?: string; load?: LoadOptions },
): Promise<VolumeInfo> {
  if (opts.size === undefined && opts.snap === undefined)
    throw new ArchipelagoError('EINVAL_SIZE', 'create needs --size SIZE, --snap SNAP, or both');
  const rt = await s.runtime();
  const m = s.configuration().config.blockerm;
  if (rt.wiring === 'daemons' && opts.size !== undefined && m.type === 'file_blocker' && m.archip_dir) {
    checkMapSpace(await dirSpace(m.archip_dir), name, opts.size, DEFAULT_BLOCKSIZE, {
      sparse: s.configuration().config.mapperd.sparse_maps !== false,
    });
  }
  if (opts.snap === undefined) return settled(s, await rt.mapper.create(name, { size: opts.size as number }));
  return settled(
    s,
    await rt.mapper.clone(opts.snap, name, {
      ...opts.load,
      ...(opts.size === undefined ? {} : { size: opts.size }),
    }),
  );
}

/**
 * Where a volume comes from. Recorded (`lineage: 'recorded'`, the map's lineage record, mapper
 * README "Lineage, rollback, flatten"): `parent`, for a clone, is the snapshot it was cloned from
 * (under its current name; `parentRemoved` when it is removed, then its last name; null once
 * `flattened`); `origin`, for a snapshot, the volume it was taken of, and `snapshotEpoch` that
 * volume's epoch then. Not recorded (maps of older versions or of the original), it is inferred
 * (`lineage: 'inferred'`): `parent` is the snapshot whose objects it still shares: the one snapshot
 * that has every shared entry of the clone (not written since the clone, not owned by it) at the
 * same block; `origin` is the volume whose data objects it holds (`<volume>_<epoch>_<n>`, the most
 * of its blocks), when a map of that name is still there. Null when it cannot be told (a clone
 * not sharing any data, or several snapshots matching: `parentCandidates` lists them).
 */
export interface Lineage {
  parent?: string | null;
  parentCandidates?: string[];
  origin?: string | null;
  lineage?: 'recorded' | 'inferred';
  parentRemoved?: boolean;
  originRemoved?: boolean;
  flattened?: boolean;
  snapshotEpoch?: bigint;
}

const DATA_OBJECT = /^(.+)_[0-9a-f]{16}_[0-9a-f]{16}$/;

/** The recorded lineage of a map, else the inferred one. */
async function lineage(s: Session, info: VolumeInfo, load: LoadOptions): Promise<Lineage> {
  const rt = await s.runtime();
  const rec = await mapLineage({ mapper: rt.mapper, blockerm: rt.blockerm }, info.name).catch(() => null);
  if (rec?.recorded && info.readonly && rec.origin !== undefined) {
    const o = rec.origin;
    if (o === null) return { origin: null, lineage: 'recorded' };
    return {
      origin: o.name,
      ...(o.removed ? { originRemoved: true } : {}),
      snapshotEpoch: o.epoch,
      lineage: 'recorded',
    };
  }
  if (rec?.recorded && !info.readonly && rec.parent !== undefined) {
    const p = rec.parent;
    const flat = rec.flattened ? { flattened: true } : {};
    if (p === null) return { parent: null, ...flat, lineage: 'recorded' };
    return { parent: p.name, ...(p.removed ? { parentRemoved: true } : {}), ...flat, lineage: 'recorded' };
  }
  return { ...(await inferLineage(s, info, load)), lineage: 'inferred' };
}

async function inferLineage(s: Session, info: VolumeInfo, load: LoadOptions): Promise<Lineage> {
  const rt = await s.runtime();
  const entries = await rt.mapper.entries(info.name, load);
  const all = await rt.mapper.list();
  if (info.readonly) {
    const counts = new Map<string, number>();
    for (const e of entries) {
      const m = DATA_OBJECT.exec(e.name);
      if (m && !(e.flags & ObjFlag.ZERO)) counts.set(m[1]!, (counts.get(m[1]!) ?? 0) + 1);
    }
    const [best] = [...counts].sort((a, b) => b[1] - a[1])[0] ?? [null];
    return { origin: best !== null && all.some((v) => v.name === best && !v.readonly) ? best : null };
  }
  const shared: number[] = [];
  entries.forEach((e, i) => {
    if (!(e.flags & (ObjFlag.WRITABLE | ObjFlag.ZERO)) && !e.name.startsWith(`${info.name}_`)) shared.push(i);
  });
  if (shared.length === 0) return { parent: null };
  const matches: string[] = [];
  for (const v of all) {
    if (!v.readonly || v.incomplete || v.blocksize !== info.blocksize || v.name === info.name) continue;
    const snap = await rt.mapper.entries(v.name).catch(() => null);
    if (snap && shared.every((i) => snap[i]?.name === entries[i]!.name)) matches.push(v.name);
  }
  return matches.length === 1 ? { parent: matches[0]! } : { parent: null, parentCandidates: matches };
}

/**
 * A volume's description; for a mapped volume, its holder's view (and where it is mapped). With
 * `lineage`, also the parent snapshot of a clone or the origin of a snapshot (`Lineage`).
 */
export async function volumeInfo(
  s: Session,
  name: string,
  opts: { lineage?: boolean; load?: LoadOptions } = {},
): Promise<{ info: VolumeInfo & Lineage; mapped: MappedStatus | null }> {
  const load = opts.load ?? {};
  const holder = await s.holder(name);
  let info: VolumeInfo;
  if (holder) {
    const got = (await callControl(holder.control, { op: 'info' })) as VolumeInfo;
    info = { ...got, epoch: BigInt(got.epoch) };
  } else info = await (await s.runtime()).mapper.info(name, load);
  const extra = opts.lineage && !info.incomplete ? await lineage(s, info, load) : {};
  return { info: { ...info, ...extra }, mapped: holder };
}

/** Every volume and snapshot. */
export async function listVolumes(s: Session): Promise<VolumeSummary[]> {
  return (await s.runtime()).mapper.list();
}

/**
 * A read-only snapshot of `name`. A mapped volume is snapshotted by its holder (it drains its
 * I/O, snapshots and resumes); `mapped` names it.
 */
export async function snapshotVolume(
  s: Session,
  name: string,
  snap: string,
): Promise<{ info: VolumeInfo; mapped: MappedStatus | null }> {
  const holder = await s.holder(name);
  if (holder) {
    const info = (await callControl(holder.control, { op: 'snapshot', snap })) as VolumeInfo;
    return { info, mapped: holder };
  }
  const rt = await s.runtime();
  await s.adopt(name);
  return { info: await rt.composer.snapshot(name, snap), mapped: null };
}

/** Takes the volume lock for this host and keeps the volume open after the command. */
export async function openVolume(s: Session, name: string): Promise<VolumeInfo> {
  const rt = await s.runtime();
  // Check that the volume exists first: a failed open would also drop a lock `vlmc lock` took.
  await rt.mapper.info(name);
  // Asks a live holder elsewhere to hand the volume over (bounded), as a write would.
  const info = await rt.mapper.openVolume(name, {}, { ask: true });
  s.keepOpen(name);
  return info;
}

/**
 * Drains the volume's I/O and releases its lock. A mapped volume is closed by its holder: the
 * export stays up and its next I/O reopens it (`mapped` names the holder).
 */
export async function closeVolume(
  s: Session,
  name: string,
): Promise<{ name: string; closed: true; mapped: MappedStatus | null }> {
  const holder = await s.holder(name);
  if (holder) {
    await callControl(holder.control, { op: 'close' });
    return { name, closed: true, mapped: holder };
  }
  const rt = await s.runtime();
  await rt.composer.close(name);
  return { name, closed: true, mapped: null };
}

/** Takes the volume lock for this host, without opening the volume (never waits). */
export async function lockVolume(s: Session, name: string): Promise<{ name: string; owner: string }> {
  validateVolumeName(name);
  const rt = await s.runtime();
  await rt.mapper.lock(name);
  return { name, owner: rt.identity };
}

export interface UnlockResult {
  name: string;
  unlocked: true;
  previousOwner: string | null;
  identity: string;
  /** With force, over another holder: who held it, and how it was fenced before the break. */
  broke?: { holder: string; pid: number | null; host: string | null; fenced: string };
}

/**
 * Releases this host's volume lock. With `force`, breaks another holder's after fencing it
 * (`Blocker.breakLock`: RADOS blocklists it, a file blocker waits out its lease), and refuses
 * (EBUSY) when the holder is a live process of this host: `vlmc unmap` or `vlmc close` it instead.
 */
export async function unlockVolume(
  s: Session,
  name: string,
  opts: { force: boolean; onWait?: (what: string, ms: number) => void },
): Promise<UnlockResult> {
  validateVolumeName(name);
  const rt = await s.runtime();
  const held = await rt.blockerm.lockInfo(name);
  const out = { name, unlocked: true as const, previousOwner: held?.owner ?? null, identity: rt.identity };
  const ours = held !== null && held.owner === rt.identity && (held.process === null || !opts.force);
  if (!opts.force || held === null || ours) {
    await rt.mapper.unlock(name, { force: false });
    return out;
  }
  const report = await rt.blockerm.breakLock(name, opts.onWait ? { onWait: opts.onWait } : {});
  const p = report.previous.process;
  return {
    ...out,
    broke: {
      holder: report.previous.owner,
      pid: p?.pid ?? null,
      host: p?.host ?? null,
      fenced: report.fenced,
    },
  };
}

/** Removes a volume or snapshot (refused while it is mapped). */
export async function removeVolume(s: Session, name: string): Promise<{ name: string; removed: true }> {
  await s.refuseMapped(name, 'remove');
  const rt = await s.runtime();
  await rt.composer.remove(name);
  return { name, removed: true };
}

/**
 * `[mapperd] trash_ttl` of the configuration (seconds) in ms: how long a removed volume stays in
 * the trash; 0 (the default, and when the configuration has no such key) until the next gc.
 */
export function trashTtlMs(s: Session): number {
  const mapperd = s.configuration().config.mapperd as unknown as Record<string, unknown>;
  const ttl = mapperd.trash_ttl;
  return typeof ttl === 'number' && Number.isFinite(ttl) && ttl > 0 ? ttl * 1000 : 0;
}

/** What the trash holds (`vlmc trash ls`): removed volumes and snapshots, oldest removal first. */
export async function listTrash(s: Session): Promise<TrashEntry[]> {
  return (await s.runtime()).mapper.listTrash({ ttlMs: trashTtlMs(s) });
}

/**
 * Brings a removed volume or snapshot back under its name (`vlmc trash restore`): its latest
 * trash entry, or `opts.entry`. EEXIST_VOLUME when the name was used again since the removal.
 */
export async function restoreFromTrash(
  s: Session,
  name: string,
  opts: { entry?: string } = {},
): Promise<VolumeInfo> {
  const rt = await s.runtime();
  return settled(s, await rt.mapper.restoreTrash(name, opts));
}

/** Renames a volume or snapshot (refused while it is mapped). */
export async function renameVolume(s: Session, name: string, to: string): Promise<VolumeInfo> {
  await s.refuseMapped(name, 'rename');
  const rt = await s.runtime();
  return rt.composer.frozen(name, () => rt.mapper.rename(name, to));
}

/** Grows or shrinks a volume (refused while it is mapped). */
export async function resizeVolume(s: Session, name: string, size: number): Promise<VolumeInfo> {
  await s.refuseMapped(name, 'resize');
  const rt = await s.runtime();
  await s.adopt(name);
  return settled(s, await rt.composer.frozen(name, () => rt.mapper.resize(name, size)));
}

export interface HashResult {
  /** Name of the hashed map (clone it with `vlmc create <vol> --snap <name>`). */
  name: string;
  /** Pithos top-level hash (Merkle root), the X-Object-Hash of the same file in Pithos. */
  root: string;
  snapshot: string;
  size: number;
  blocksize: number;
  blocks: number;
  /** Blocks backed by content objects (not the zero block). */
  contentBlocks: number;
  /** An identical hashed map existed already (nothing was written). */
  existed: boolean;
  seconds: number;
}

/** Content-addresses a snapshot into a read-only hashed map named by its Merkle root. */
export async function hashSnapshot(
  s: Session,
  snapshot: string,
  opts: { parallelism: number; onProgress?: (bytes: number, total: number) => void },
): Promise<HashResult> {
  const rt = await s.runtime();
  const t0 = performance.now();
  const progress = opts.onProgress;
  const total = progress ? (await rt.mapper.info(snapshot)).size : 0;
  const r = await rt.mapper.hash(snapshot, {
    parallelism: opts.parallelism,
    ...(progress ? { onProgress: (_d: number, _n: number, bytes: number) => progress(bytes, total) } : {}),
  });
  return {
    name: r.name,
    root: r.root,
    snapshot,
    size: r.size,
    blocksize: r.blocksize,
    blocks: r.hashes.length,
    contentBlocks: r.hashes.filter((h) => h !== ZERO_BLOCK).length,
    existed: r.existed,
    seconds: (performance.now() - t0) / 1000,
  };
}

/**
 * A new volume from a raw image file, or from a stream with no size up front (`vlmc import - NAME`:
 * stdin; see `importStream` for `size` and growth). Bulk mode: the new volume's objects need not be
 * durable one by one (a crash in the middle leaves a partial volume either way); everything is
 * flushed, data first, before the import reports success.
 */
export async function importImage(
  s: Session,
  from: string | AsyncIterable<Uint8Array>,
  name: string,
  opts: TransferOptions & { size?: number } = {},
): Promise<TransferStats> {
  const rt = await s.runtime({ bulk: true });
  const o = { inflight: DEFAULT_IMPORT_INFLIGHT, ...opts };
  return typeof from === 'string' ? importFile(rt, from, name, o) : importStream(rt, from, name, o);
}

/**
 * A volume or snapshot to a sparse raw file (bulk mode: O_DIRECT reads into the slot buffers), or
 * to a stream, every byte in order (`vlmc export NAME -`: stdout).
 */
export async function exportImage(
  s: Session,
  name: string,
  to: string | NodeJS.WritableStream,
  opts: TransferOptions = {},
): Promise<TransferStats> {
  const rt = await s.runtime({ bulk: true });
  await s.adopt(name);
  const o = { inflight: DEFAULT_INFLIGHT, ...opts };
  return typeof to === 'string' ? exportVolume(rt, name, to, o) : exportVolumeToStream(rt, name, to, o);
}

export {
  DEFAULT_DIFF_INFLIGHT,
  type DiffTransferOptions,
  diffVolume,
  type ExportDiffStats,
  exportDiff,
  type ImportDiffStats,
  importDiff,
  type VolumeDiff,
} from './diff-transfer.js';

/**
 * The mapper's `rollback` / `flatten`: the embedded Mapper's, or in the daemon wiring mapperd's
 * (MapperOp.ROLLBACK / FLATTEN through the SegmentMapper).
 */
function lifeCycleOp<K extends 'rollback' | 'flatten'>(mapper: MapperApi, op: K): NonNullable<MapperApi[K]> {
  const fn = mapper[op];
  if (!fn)
    throw new ArchipelagoError('ENOTSUP', `this mapper cannot ${op === 'rollback' ? 'roll back' : op}`);
  return fn.bind(mapper) as NonNullable<MapperApi[K]>;
}

/**
 * Rolls volume `name` back to snapshot `snap` of its lineage: a crash-atomic map change, no data
 * copied. A mapped volume is rolled back by its holder (I/O drained first) when the size stays;
 * refused (EBUSY naming it) otherwise. In the daemon wiring mapperd does it (for the holder, or
 * for anyone when no client holds the volume open).
 */
export async function rollbackVolume(s: Session, name: string, snap: string): Promise<VolumeInfo> {
  const holder = await s.holder(name);
  if (holder) {
    const got = (await callControl(holder.control, { op: 'rollback', snap })) as VolumeInfo;
    return { ...got, epoch: BigInt(got.epoch) };
  }
  const rt = await s.runtime();
  if (rt.wiring === 'embedded') await s.adopt(name);
  const rollback = lifeCycleOp(rt.mapper, 'rollback');
  return settled(s, await rt.composer.frozen(name, () => rollback(name, snap)));
}

/**
 * Copies every block clone `name` still shares with its parent, so that it depends on nothing;
 * `onProgress` counts blocks. In the daemon wiring mapperd does it, online when the volume is
 * mapped; meanwhile the blocks still shared are counted from the clone's map (MapperOp.ENTRIES)
 * every FLATTEN_POLL_MS for `onProgress`. In the embedded wiring a mapped volume is flattened by
 * its holder while it serves I/O (no progress then).
 */
export async function flattenVolume(
  s: Session,
  name: string,
  opts: {
    onProgress?: (done: number, total: number) => void;
    /** Daemon wiring: how often the clone's map is polled for `onProgress` (FLATTEN_POLL_MS). */
    pollMs?: number;
  } = {},
): Promise<FlattenResult & { seconds: number }> {
  const t0 = performance.now();
  const rt = await s.runtime();
  const holder = rt.wiring === 'daemons' ? null : await s.holder(name);
  if (holder) {
    // No timeout worth the name: a flatten takes as long as its copies.
    const r = (await callControl(holder.control, { op: 'flatten' }, 2 ** 31 - 1)) as FlattenResult;
    return { ...r, seconds: (performance.now() - t0) / 1000 };
  }
  if (rt.wiring === 'embedded') await s.adopt(name);
  const flatten = lifeCycleOp(rt.mapper, 'flatten');
  const onProgress = opts.onProgress;
  const r =
    rt.wiring === 'daemons' && onProgress
      ? await polledProgress(rt.mapper, name, () => flatten(name), onProgress, opts.pollMs ?? FLATTEN_POLL_MS)
      : await flatten(name, onProgress ? { onProgress } : {});
  return { ...r, seconds: (performance.now() - t0) / 1000 };
}

/** How often a flatten in mapperd is polled for its progress. */
export const FLATTEN_POLL_MS = 300;

/**
 * Runs `run` (mapperd's FLATTEN, which reports nothing until it is done) while counting the blocks
 * clone `name` still shares, from its map entries (the mapper's `sharedBlocks`, what the flatten
 * copies), every `pollMs`: `onProgress(total - shared, total)`, never going back, and
 * `(total, total)` once it is done. A poll that fails (mapperd restarting) is skipped; a big map
 * is polled less often.
 */
async function polledProgress(
  mapper: MapperApi,
  name: string,
  run: () => Promise<FlattenResult>,
  onProgress: (done: number, total: number) => void,
  pollMs: number,
): Promise<FlattenResult> {
  let size = 0; // map entries, to space the polls of a big map out
  const shared = async () => {
    const entries = await mapper.entries(name);
    size = entries.length;
    return sharedBlocks(name, entries).length;
  };
  // A volume that cannot be listed: the flatten says why (ENOENT, ...), with no progress.
  const total = await shared().catch(() => null);
  if (total === null) return run();
  let done = 0;
  onProgress(0, total);
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const poll = async () => {
    const left = await shared().catch(() => null);
    if (stopped) return;
    if (left !== null && total - left > done) {
      done = total - left;
      onProgress(done, total);
    }
    // A big map is listed less often: 1 s per 10,000 blocks (a 40 GiB volume of 4 MiB blocks).
    timer = setTimeout(poll, Math.max(pollMs, size / 10));
  };
  timer = setTimeout(poll, pollMs);
  try {
    const r = await run();
    if (done < total) onProgress(total, total);
    return r;
  } finally {
    stopped = true;
    clearTimeout(timer);
  }
}

/** The live snapshots taken of volume `name` (under any of its names), oldest first. */
export async function listSnapshots(s: Session, name: string): Promise<SnapshotEntry[]> {
  const rt = await s.runtime();
  const info = await rt.mapper.info(name);
  if (info.readonly) {
    throw new ArchipelagoError(
      'EINVAL',
      `"${name}" is a snapshot; "vlmc snapshots" lists the snapshots of a volume`,
    );
  }
  return snapshotsOf({ mapper: rt.mapper, blockerm: rt.blockerm }, name);
}

/** The live clones of snapshot `name` (recorded; a flattened clone is no longer one). */
export async function listChildren(s: Session, name: string): Promise<string[]> {
  const rt = await s.runtime();
  const info = await rt.mapper.info(name);
  if (!info.readonly) {
    throw new ArchipelagoError('ENOTSNAPSHOT', `"${name}" is a volume; only snapshots have clones`, {
      details: { volume: name },
    });
  }
  return childrenOf({ mapper: rt.mapper, blockerm: rt.blockerm }, name);
}

export interface GcRunOptions {
  dryRun?: boolean;
  /** Overrides `[mapperd] gc_grace` (ms). */
  graceMs?: number;
  /** Runs under the gc lock before the mark (`GcOptions.prepare`: the trash purge). */
  prepare?: () => Promise<unknown>;
  onProgress?: (p: GcProgress) => void;
}

/**
 * `vlmc gc`: one garbage collection over the configured blocker pair (`collectGarbage` in
 * @archipelago/mapper), with `[mapperd] gc_grace`. It runs on the embedded wiring: in the daemon
 * wiring this process opens blockerm and blockerb itself (the daemons' blockers over the segment
 * cannot tell objects' ages), and works next to the daemons as any other process of the host.
 */
export async function gcStore(s: Session, opts: GcRunOptions = {}): Promise<GcReport> {
  const loaded = s.configuration();
  const graceMs = opts.graceMs ?? loaded.config.mapperd.gc_grace * 1000;
  const rt = await s.runtime();
  // Under the gc lock, before the mark: trash entries past `[mapperd] trash_ttl` are purged, so
  // their objects are garbage in this very run (a dry run purges nothing).
  const prepare = opts.prepare ?? (() => rt.mapper.purgeExpiredTrash(Date.now(), trashTtlMs(s)));
  // A dry run (and `vlmc du`) counts the expired entries as purged: what a real run frees.
  const expired = opts.dryRun
    ? new Set(
        (await rt.mapper.listTrash({ ttlMs: trashTtlMs(s) }))
          .filter((t) => t.expiresAt <= Date.now())
          .map((t) => t.entry),
      )
    : undefined;
  const run = (blockerm: Blocker, blockerb: Blocker) =>
    collectGarbage({
      blockerm,
      blockerb,
      graceMs,
      ...(opts.dryRun ? { dryRun: true, ...(expired ? { asIfPurged: expired } : {}) } : { prepare }),
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    });
  if (rt.wiring === 'embedded') return run(rt.blockerm, rt.blockerb);
  const where = { file: loaded.path };
  const blockerm = await openBlocker(blockerOptions(loaded, 'blockerm'), null, {
    role: 'blockerm',
    ...where,
  });
  try {
    const blockerb = await openBlocker(blockerOptions(loaded, 'blockerb'), null, {
      role: 'blockerb',
      ...where,
    });
    try {
      return await run(blockerm, blockerb);
    } finally {
      await blockerb.close().catch(() => {});
    }
  } finally {
    await blockerm.close().catch(() => {});
  }
}
