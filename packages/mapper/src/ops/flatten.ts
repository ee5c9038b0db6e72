/**
 * Flatten (README "Lineage, rollback, flatten"): a clone copies up every block it still shares
 * (entries neither writable, nor zero, nor its own `<name>_<epoch>_<index>` objects), through the
 * copy-up path of writes (ops/map-io.ts `copyUp`: the data object is durable before the entry
 * names it), so it can run while this mapper serves the volume's writes. Then its lineage record
 * says it is flattened, parent none. Killed anywhere, every block reads as before; running it
 * again finishes it. The volume must be this mapper's to open: EBUSY naming the holder otherwise.
 */
import { archipError } from '@archipelago/libxseg';
import { ObjFlag } from '@archipelago/mapfile';
import type { MapperContext } from '../context.js';
import { isReadonly } from '../map.js';
import { pool } from '../mutex.js';
import { newLineageId, readLineage, writeLineage } from './lineage.js';
import { copyUp, openVolume } from './map-io.js';
import { heldElsewhere } from './rollback.js';

export interface FlattenOptions {
  /** Called after each block copied: blocks done, blocks to copy. */
  onProgress?: (done: number, total: number) => void;
  /** Copy-ups at once (default: the mapper's parallelism, at most 16). */
  parallelism?: number;
}

export interface FlattenResult {
  name: string;
  /** Blocks copied up. */
  copied: number;
  /** The parent the clone no longer depends on (null: none was recorded). */
  parent: string | null;
}

/** True when `object` is one of `vol`'s own data objects (`<vol>_<epoch>_<index>`). */
export function isOwnObject(vol: string, object: string): boolean {
  return (
    object.length === vol.length + 34 &&
    object.startsWith(`${vol}_`) &&
    /_[0-9a-f]{16}_[0-9a-f]{16}$/.test(object)
  );
}

/** The block indexes of map entries a flatten copies up. */
export function sharedBlocks(vol: string, entries: readonly { name: string; flags: number }[]): number[] {
  const out: number[] = [];
  entries.forEach((e, i) => {
    if (e.flags & (ObjFlag.WRITABLE | ObjFlag.ZERO)) return;
    if (!isOwnObject(vol, e.name)) out.push(i);
  });
  return out;
}

/** Flattens clone `name` (see the file comment). */
export async function flatten(
  ctx: MapperContext,
  name: string,
  { onProgress, parallelism }: FlattenOptions = {},
): Promise<FlattenResult> {
  ctx.checkOpen();
  const wasOpen = ctx.locks.cached(name) !== undefined;
  const vol = wasOpen
    ? ctx.locks.cached(name)!
    : await openVolume(ctx, name, {}, false).catch((e: unknown) => {
        throw heldElsewhere(e, name, 'flatten');
      });
  try {
    if (isReadonly(vol.map))
      throw archipError('EREADONLY', `"${name}" is a snapshot; only a volume can be flattened`);
    const todo = sharedBlocks(name, vol.map.entries);
    let done = 0;
    onProgress?.(0, todo.length);
    await pool(todo.length, Math.min(parallelism ?? ctx.parallelism, 16), async (k) => {
      while (vol.barrier) await vol.barrier; // a map change (snapshot) under way: after it
      await copyUp(ctx, vol, todo[k]!);
      onProgress?.(++done, todo.length);
    });
    // Blocks a snapshot taken meanwhile made shared are its own objects, not the parent's.
    const rec = await readLineage(ctx.blockerm, name);
    await writeLineage(ctx.blockerm, name, {
      ...(rec ?? { id: newLineageId(), created: 0 }),
      parent: null,
      flattened: true,
    });
    ctx.log.info({ volume: name, copied: todo.length }, 'flattened volume');
    return { name, copied: todo.length, parent: rec?.parent?.name ?? null };
  } finally {
    if (!wasOpen) await ctx.locks.closeVolume(name);
  }
}
