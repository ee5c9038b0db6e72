/**
 * Incremental diffs: `vlmc diff` (the changed extents between two maps of one lineage, from the
 * maps alone), `vlmc export-diff` and `vlmc import-diff` (the same change as an RBD diff v1 stream,
 * the format of `rbd export-diff` / `rbd import-diff`, so incremental backups move both ways
 * between Archipelago and Ceph RBD).
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { type FileHandle, mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { ArchipelagoError, fromSystemError } from '@archipelago/libxseg';
import { decodeRbdDiff, MAX_VOLUME_NAME, RbdDiffWriter, validateVolumeName } from '@archipelago/mapfile';
import {
  changedRuns,
  type DiffExtent,
  diffBytes,
  diffEntries,
  MAX_VOLUME_SIZE,
  type VolumeInfo,
} from '@archipelago/mapper';
import type { Session } from './session.js';
import { writeTo } from './transfer.js';
import type { Runtime } from './types.js';
import { rollbackVolume } from './volumes.js';

/** Data pieces in flight by default (export: reads ahead; import: writes). */
export const DEFAULT_DIFF_INFLIGHT = 8;

/** What `vlmc diff` prints: the extents of `target` that differ from `fromSnap` (or from nothing). */
export interface VolumeDiff {
  target: string;
  fromSnap: string | null;
  size: number;
  blocksize: number;
  extents: DiffExtent[];
  /** Bytes of data extents and of zero extents. */
  dataBytes: number;
  zeroBytes: number;
}

function notFound(e: unknown, what: string): never {
  if (ArchipelagoError.is(e, 'ENOENT_VOLUME'))
    throw new ArchipelagoError('ENOENT_VOLUME', `${what}: ${e.message}`, { details: e.details });
  throw e;
}

/** The diff from the two maps' entries (no data is read). */
async function computeDiff(
  rt: Runtime,
  target: string,
  fromSnap: string | null,
): Promise<VolumeDiff & { info: VolumeInfo; fromSize: number }> {
  const info = await rt.mapper.info(target);
  const to = { ...info, entries: await rt.mapper.entries(target) };
  let from = null;
  if (fromSnap !== null) {
    const f = await rt.mapper.info(fromSnap).catch((e: unknown) => notFound(e, `--from-snap ${fromSnap}`));
    if (!f.readonly) {
      throw new ArchipelagoError(
        'EINVAL',
        `--from-snap ${fromSnap} is a volume, not a snapshot: a diff starts from a snapshot (its contents never change)`,
        { details: { volume: fromSnap } },
      );
    }
    from = { ...f, entries: await rt.mapper.entries(fromSnap) };
  }
  const extents = diffEntries(from, to);
  const b = diffBytes(extents);
  return {
    info,
    fromSize: from?.size ?? 0,
    target,
    fromSnap,
    size: info.size,
    blocksize: info.blocksize,
    extents,
    dataBytes: b.data,
    zeroBytes: b.zero,
  };
}

/**
 * The changed extents of `target` (a snapshot or volume) since snapshot `fromSnap`, or every
 * allocated extent without it, computed from the two maps: a block naming the same object in both
 * is unchanged, one that became the zero block is a zero extent, anything else is data.
 */
export async function diffVolume(
  s: Session,
  target: string,
  opts: { fromSnap?: string } = {},
): Promise<VolumeDiff> {
  const {
    info: _info,
    fromSize: _fromSize,
    ...d
  } = await computeDiff(await s.runtime(), target, opts.fromSnap ?? null);
  return d;
}

export interface DiffTransferOptions {
  /** Data pieces in flight (default DEFAULT_DIFF_INFLIGHT). */
  inflight?: number;
  /** Called with the bytes done so far and the total. */
  onProgress?: (done: number, total: number) => void;
}

export interface ExportDiffStats {
  snapshot: string;
  fromSnap: string | null;
  /** The stream's 't' record (left out when the target is a volume, as rbd does for the head). */
  toSnap: string | null;
  file: string;
  /** The image size the stream ends with ('s'). */
  size: number;
  /** Bytes sent as data ('w') and as zeros ('z'). */
  dataBytes: number;
  zeroBytes: number;
  /** Bytes of the stream. */
  streamBytes: number;
  seconds: number;
}

/**
 * Writes the change of `snapshot` since `fromSnap` (or all of it) as an RBD diff v1 stream to
 * `file` (created or truncated; removed again if the export fails) or to the stream `to`
 * (`vlmc export-diff ... -`: stdout). Only changed blocks are read. A changed block that reads as
 * zeros goes as a 'z' record (or, without `fromSnap`, not at all).
 */
export async function exportDiff(
  s: Session,
  snapshot: string,
  to: string | NodeJS.WritableStream,
  opts: DiffTransferOptions & { fromSnap?: string } = {},
): Promise<ExportDiffStats> {
  const started = performance.now();
  const rt = await s.runtime({ bulk: true });
  await s.adopt(snapshot);
  const fromSnap = opts.fromSnap ?? null;
  const d = await computeDiff(rt, snapshot, fromSnap);
  const inflight = Math.max(1, opts.inflight ?? DEFAULT_DIFF_INFLIGHT);
  let fh: FileHandle | null = null;
  let put: (b: Uint8Array) => Promise<void>;
  if (typeof to === 'string') {
    try {
      fh = await open(to, 'w');
    } catch (e) {
      throw fromSystemError(e, `cannot create ${to}`);
    }
    const f = fh;
    put = async (b) => {
      try {
        await f.write(b);
      } catch (e) {
        throw fromSystemError(e, `cannot write ${to}`);
      }
    };
  } else put = (b) => writeTo(to, b);
  const w = new RbdDiffWriter();
  let streamBytes = 0;
  const emit = async (b: Uint8Array) => {
    streamBytes += b.length;
    await put(b);
  };
  // Data extents are read a block at a time (a few ahead); zero extents need no read.
  const pieces: Array<{ offset: number; length: number; zero: boolean }> = [];
  for (const e of d.extents) {
    if (e.zero) pieces.push(e);
    else {
      for (let o = e.offset; o < e.offset + e.length; ) {
        const end = Math.min(e.offset + e.length, (Math.floor(o / d.blocksize) + 1) * d.blocksize);
        pieces.push({ offset: o, length: end - o, zero: false });
        o = end;
      }
    }
  }
  const total = d.dataBytes + d.zeroBytes;
  let done = 0;
  let dataBytes = 0;
  let zeroBytes = 0;
  // A changed block is read at both ends (the from-snapshot's bytes past its end, or of a block it
  // did not have, read as zeros): only the 4 KiB granules that differ go into the stream.
  const fromSize = d.fromSize;
  const readPiece = async (p: { offset: number; length: number }) => {
    const toData = rt.composer.read(snapshot, p.offset, p.length);
    if (fromSnap === null || p.offset >= fromSize) return { to: await toData, from: null };
    const n = Math.min(p.length, fromSize - p.offset);
    const [to, head] = await Promise.all([toData, rt.composer.read(fromSnap, p.offset, n)]);
    return { to, from: n === p.length ? head : Buffer.concat([head, Buffer.alloc(p.length - n)]) };
  };
  const reads = new Map<number, Promise<{ to: Buffer; from: Buffer | null }>>();
  try {
    if (fromSnap !== null) await emit(w.from(fromSnap));
    const toSnap = d.info.readonly ? snapshot : null;
    if (toSnap !== null) await emit(w.to(toSnap));
    await emit(w.imageSize(d.size));
    for (let i = 0; i < pieces.length; i++) {
      for (let j = i; j < Math.min(pieces.length, i + inflight); j++) {
        const p = pieces[j]!;
        if (!p.zero && !reads.has(j)) reads.set(j, readPiece(p));
      }
      const p = pieces[i]!;
      if (p.zero) {
        await emit(w.zero(p.offset, p.length));
        zeroBytes += p.length;
      } else {
        const { to: data, from } = await reads.get(i)!;
        reads.delete(i);
        for (const r of changedRuns(from, data)) {
          if (r.zero) {
            await emit(w.zero(p.offset + r.offset, r.length));
            zeroBytes += r.length;
          } else {
            await emit(w.write(p.offset + r.offset, r.length));
            await emit(data.subarray(r.offset, r.offset + r.length));
            dataBytes += r.length;
          }
        }
      }
      done += p.length;
      opts.onProgress?.(done, total);
    }
    await emit(w.end());
    if (fh) {
      try {
        await fh.sync();
      } catch (e) {
        throw fromSystemError(e, `cannot sync ${to as string}`);
      }
    }
    return {
      snapshot,
      fromSnap,
      toSnap,
      file: typeof to === 'string' ? to : '-',
      size: d.size,
      dataBytes,
      zeroBytes,
      streamBytes,
      seconds: (performance.now() - started) / 1000,
    };
  } catch (e) {
    if (typeof to === 'string') await rm(to, { force: true }).catch(() => {});
    throw e;
  } finally {
    for (const p of reads.values()) p.catch(() => {});
    await fh?.close().catch(() => {});
  }
}

export interface ImportDiffStats {
  volume: string;
  file: string;
  fromSnap: string | null;
  /** The snapshot created at the end (the stream's 't' record), or null. */
  toSnap: string | null;
  /** Size before and after ('s'). */
  sizeBefore: number;
  size: number;
  /** Bytes written ('w') and zeroed ('z'). */
  dataBytes: number;
  zeroBytes: number;
  records: number;
  /** Bytes of the stream. */
  streamBytes: number;
  seconds: number;
}

/** What the first pass learned of a stream that decoded whole. */
interface DiffPlan {
  from: string | null;
  to: string | null;
  size: number | null;
  /** Largest end of a data record. */
  end: number;
  dataBytes: number;
  zeroBytes: number;
  records: number;
}

async function readPlan(file: string): Promise<DiffPlan> {
  const plan: DiffPlan = { from: null, to: null, size: null, end: 0, dataBytes: 0, zeroBytes: 0, records: 0 };
  let last = -1;
  for await (const r of decodeRbdDiff(createReadStream(file))) {
    if (r.at !== last) plan.records++;
    last = r.at;
    if (r.type === 'from') plan.from = r.name;
    else if (r.type === 'to') plan.to = r.name;
    else if (r.type === 'size') plan.size = r.size;
    else if (r.type === 'write') {
      plan.dataBytes += r.data.length;
      plan.end = Math.max(plan.end, r.offset + r.data.length);
    } else if (r.type === 'zero') {
      plan.zeroBytes += r.length;
      plan.end = Math.max(plan.end, r.offset + r.length);
    }
  }
  return plan;
}

/** The same object names, block for block, and the same size: the same contents. */
async function sameContents(rt: Runtime, a: VolumeInfo, b: VolumeInfo): Promise<boolean> {
  if (a.size !== b.size || a.blocksize !== b.blocksize) return false;
  const [ea, eb] = await Promise.all([rt.mapper.entries(a.name), rt.mapper.entries(b.name)]);
  return diffEntries({ ...a, entries: ea }, { ...b, entries: eb }).length === 0;
}

/** Refuses (before anything changes) a stream that does not apply to `volume` as it is. */
async function checkTarget(rt: Runtime, volume: string, plan: DiffPlan): Promise<VolumeInfo> {
  const info = await rt.mapper.info(volume);
  if (info.readonly) {
    throw new ArchipelagoError('EREADONLY', `"${volume}" is a snapshot; import a diff into a volume`, {
      details: { volume },
    });
  }
  if (plan.to !== null) {
    validateVolumeName(plan.to);
    const exists = await rt.mapper.info(plan.to).then(
      () => true,
      (e: unknown) => (ArchipelagoError.is(e, 'ENOENT_VOLUME') ? false : Promise.reject(e)),
    );
    if (exists) {
      throw new ArchipelagoError(
        'EEXIST_VOLUME',
        `the diff ends at snapshot "${plan.to}", which exists already; nothing was changed`,
        { details: { snapshot: plan.to } },
      );
    }
  }
  if (plan.from !== null) {
    const from = await rt.mapper.info(plan.from).catch((e: unknown) => {
      if (!ArchipelagoError.is(e, 'ENOENT_VOLUME')) throw e;
      throw new ArchipelagoError(
        'ENOENT_VOLUME',
        `the diff starts from snapshot "${plan.from}", which does not exist; nothing was changed`,
        { details: { snapshot: plan.from } },
      );
    });
    if (!from.readonly || !(await sameContents(rt, from, info))) {
      throw new ArchipelagoError(
        'EINVAL',
        `the diff starts from snapshot "${plan.from}", but "${volume}" ${from.readonly ? 'has changed since (or is not of its lineage)' : `is not at it ("${plan.from}" is not a snapshot)`}: roll it back or import into a clone of "${plan.from}"; nothing was changed`,
        { details: { volume, snapshot: plan.from } },
      );
    }
  }
  const size = plan.size ?? info.size;
  if (size <= 0 || size > MAX_VOLUME_SIZE) {
    throw new ArchipelagoError(
      'EINVAL_SIZE',
      `the diff gives "${volume}" the size ${size}: a volume has 1 byte to 1 PiB; nothing was changed`,
      { details: { volume, size } },
    );
  }
  if (plan.end > size) {
    throw new ArchipelagoError(
      'EINVAL',
      `the diff writes up to byte ${plan.end}, past the ${size} bytes of "${volume}"; nothing was changed`,
      { details: { volume, end: plan.end, size } },
    );
  }
  return info;
}

/** Copies `input` to a new temp file; returns it and how to remove it. */
async function spool(
  input: AsyncIterable<Uint8Array>,
): Promise<{ file: string; dispose: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'vlmc-import-diff-'));
  const dispose = () => rm(dir, { recursive: true, force: true });
  const file = join(dir, 'stream');
  try {
    await pipeline(input, createWriteStream(file, { mode: 0o600 }));
  } catch (e) {
    await dispose();
    throw fromSystemError(e, 'cannot spool the input');
  }
  return { file, dispose };
}

/**
 * The maps an import into `volume` stages its change in: `base`, a snapshot of the volume;
 * `work`, a clone of it the records are written to; `next`, a snapshot of that, which the volume
 * is rolled back to (mapper ops/rollback.ts: a snapshot of a clone of a snapshot of the volume is
 * of its lineage). Names starting with `.import-diff.` are this module's: a killed import leaves
 * them (listed by `vlmc ls`, the volume unchanged or wholly changed), and the next import into the
 * volume removes them first.
 */
export function stagingNames(volume: string): { base: string; work: string; next: string } {
  const long = `.import-diff.${volume}`.length + 5 > MAX_VOLUME_NAME;
  const tag = long ? createHash('sha256').update(volume).digest('hex').slice(0, 24) : volume;
  const at = (what: string) => `.import-diff.${tag}.${what}`;
  return { base: at('base'), work: at('work'), next: at('next') };
}

/** Removes the staging maps that exist (newest first), and purges them from the trash. */
async function clearStaging(rt: Runtime, stage: { base: string; work: string; next: string }): Promise<void> {
  const names = [stage.next, stage.work, stage.base];
  for (const n of names) {
    const exists = await rt.mapper.info(n).then(
      () => true,
      (e: unknown) => (ArchipelagoError.is(e, 'ENOENT_VOLUME') ? false : Promise.reject(e)),
    );
    if (exists) await rt.composer.remove(n);
  }
  for (const t of await rt.mapper.listTrash())
    if (names.includes(t.name)) await rt.mapper.purgeTrash(t.entry);
}

/** Writes the data and zero records of the stream in `file` to `target`, `inflight` at once. */
async function applyRecords(
  rt: Runtime,
  file: string,
  target: string,
  plan: DiffPlan,
  opts: DiffTransferOptions,
): Promise<void> {
  const inflight = Math.max(1, opts.inflight ?? DEFAULT_DIFF_INFLIGHT);
  const pending = new Set<Promise<void>>();
  let failure: unknown = null;
  const total = plan.dataBytes + plan.zeroBytes;
  let done = 0;
  const start = (p: Promise<void>, bytes: number) => {
    const q: Promise<void> = p
      .then(
        () => {
          done += bytes;
          opts.onProgress?.(done, total);
        },
        (e: unknown) => {
          failure ??= e;
        },
      )
      .finally(() => pending.delete(q));
    pending.add(q);
  };
  for await (const r of decodeRbdDiff(createReadStream(file))) {
    while (pending.size >= inflight) await Promise.race(pending);
    if (failure !== null) break;
    if (r.type === 'write') start(rt.composer.write(target, r.offset, r.data), r.data.length);
    else if (r.type === 'zero') start(rt.composer.writeZeroes(target, r.offset, r.length), r.length);
  }
  await Promise.all(pending);
  if (failure !== null) throw failure;
}

/**
 * Applies an RBD diff v1 stream (`rbd export-diff`'s, or `exportDiff`'s) to volume `volume`, as
 * `rbd import-diff` does, from `from` (a file) or a stream (`-`: stdin, spooled to a temp file
 * first). The whole stream is read and checked before anything changes: a malformed or truncated
 * stream, a from-snapshot that does not exist or that the volume is no longer at (its contents must
 * be the snapshot's: stricter than rbd, which only checks that the snapshot exists), a
 * to-snapshot that exists already, or a mapped volume change nothing. Then the change is staged
 * (`stagingNames`): a clone of a snapshot of the volume takes the stream's size, its data and zero
 * records, everything is flushed, and the volume is rolled back to a snapshot of that clone: one
 * crash-atomic map change, so a failure or a kill at any point leaves the volume wholly as it was
 * or wholly as the stream makes it. Then the to-snapshot, when the stream names one, is taken.
 */
export async function importDiff(
  s: Session,
  from: string | AsyncIterable<Uint8Array>,
  volume: string,
  opts: DiffTransferOptions = {},
): Promise<ImportDiffStats> {
  const started = performance.now();
  await s.refuseMapped(volume, 'import a diff into');
  const rt = await s.runtime({ bulk: true });
  const spooled = typeof from === 'string' ? null : await spool(from);
  const file = spooled?.file ?? (from as string);
  try {
    let streamBytes: number;
    try {
      streamBytes = (await stat(file)).size;
    } catch (e) {
      throw fromSystemError(e, `cannot read ${file}`);
    }
    const plan = await readPlan(file).catch((e: unknown) => {
      if (ArchipelagoError.isInstance(e)) {
        e.message = `${e.message}; nothing was changed`;
        throw e;
      }
      throw fromSystemError(e, `cannot read ${file}`);
    });
    const info = await checkTarget(rt, volume, plan);
    await s.adopt(volume);
    const size = plan.size ?? info.size;
    // Staged in a clone of a snapshot of the volume, committed by a rollback (crash-atomic): a
    // failure or a kill before the commit leaves the volume as it was, after it as the stream
    // makes it (see `stagingNames`).
    const stage = stagingNames(volume);
    await clearStaging(rt, stage); // what a killed import left
    try {
      await rt.composer.snapshot(volume, stage.base);
      await rt.mapper.clone(stage.base, stage.work, { size: Math.max(size, info.size) });
      if (size < info.size) await rt.composer.frozen(stage.work, () => rt.mapper.resize(stage.work, size));
      await applyRecords(rt, file, stage.work, plan, opts);
      await rt.blockerb.flush();
      await rt.composer.flush(stage.work);
      await rt.composer.snapshot(stage.work, stage.next);
      await rollbackVolume(s, volume, stage.next); // the commit
    } catch (e) {
      await clearStaging(rt, stage).catch(() => {});
      throw e;
    }
    await clearStaging(rt, stage);
    if (plan.to !== null) await rt.composer.snapshot(volume, plan.to); // not mapped: checked above
    return {
      volume,
      file: typeof from === 'string' ? from : '-',
      fromSnap: plan.from,
      toSnap: plan.to,
      sizeBefore: info.size,
      size,
      dataBytes: plan.dataBytes,
      zeroBytes: plan.zeroBytes,
      records: plan.records,
      streamBytes,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    await spooled?.dispose();
  }
}
