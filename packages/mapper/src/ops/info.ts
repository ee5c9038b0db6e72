/** Reading about maps: info, list, entries. */

import { ArchipelagoError } from '@archipelago/libxseg';
import {
  decodeHeaderV2,
  decodeIntent,
  detectVersion,
  type MapEntry,
  MapFlag,
  objectCount,
} from '@archipelago/mapfile';
import type { MapperContext } from '../context.js';
import { describe, type LoadedMap } from '../map.js';
import type { LoadOptions, VolumeInfo, VolumeSummary } from '../types.js';
import { renameToSettle, repairing, settle } from './repair.js';

/**
 * What a map is, from the cached map when the volume is open, else loaded fresh. An interrupted
 * rename to it is settled first when its locks are free; an INCOMPLETE map is described as such.
 */
export async function info(ctx: MapperContext, name: string, opts: LoadOptions = {}): Promise<VolumeInfo> {
  ctx.checkOpen();
  const map = await loadShowing(ctx, name, opts);
  return describe(map, await ctx.locks.owner(name));
}

/** `current(name)`, settling an interrupted rename if it can and showing an incomplete map. */
async function loadShowing(ctx: MapperContext, name: string, opts: LoadOptions): Promise<LoadedMap> {
  try {
    return await ctx.locks.current(name, opts);
  } catch (e) {
    if (!ArchipelagoError.is(e, 'EBUSY') || e.details.incomplete !== true) throw e;
    if (renameToSettle(e) !== null) {
      const settled = await settle(ctx, name).catch(() => null);
      if (settled === 'rolled-forward' || settled === 'rolled-back') return ctx.locks.current(name, opts);
    }
    return ctx.locks.current(name, { ...opts, incomplete: true });
  }
}

/**
 * Every live or incomplete map in blockerm, sorted by name. Reads only headers (a v1 map is
 * decoded whole), so listing costs one small read per map whatever the volume sizes. An
 * interrupted rename is settled on the way when its locks are free. A legacy `archip_<name>` map
 * is listed only when no `<name>` object is there (after an upgrade, `<name>` is the map).
 */
export async function list(ctx: MapperContext): Promise<VolumeSummary[]> {
  ctx.checkOpen();
  const out: VolumeSummary[] = [];
  const objs: string[] = [];
  for await (const obj of ctx.store.objects()) {
    if (!/_[0-9a-f]{16}$/.test(obj)) objs.push(obj); // not a map block (nor a data object)
  }
  const present = new Set(objs);
  for (const obj of objs) {
    const legacy = obj.startsWith('archip_');
    const name = legacy ? obj.slice('archip_'.length) : obj;
    if (legacy && present.has(name)) continue;
    try {
      let head = await ctx.store.readHead(obj).catch(() => null);
      if (!head) continue;
      const version = detectVersion(head.bytes, obj);
      if (version === 2) {
        let h = decodeHeaderV2(head.bytes.subarray(0, head.stored), obj);
        if (
          h.flags & (MapFlag.DELETED | MapFlag.INCOMPLETE) &&
          decodeIntent(head.bytes.subarray(0, head.stored))
        ) {
          // An interrupted rename: settle it if its locks are free, and look again.
          await settle(ctx, name).catch(() => null);
          head = await ctx.store.readHead(obj);
          if (!head) continue;
          h = decodeHeaderV2(head.bytes.subarray(0, head.stored), obj);
        }
        if (h.flags & MapFlag.DELETED) continue;
        out.push({
          name,
          size: h.size,
          blocksize: h.blocksize,
          epoch: h.epoch,
          readonly: (h.flags & MapFlag.READONLY) !== 0,
          incomplete: (h.flags & MapFlag.INCOMPLETE) !== 0,
          version: 2,
          objects: objectCount(h.size, h.blocksize),
        });
      } else {
        const { allocated: _a, writable: _w, lockOwner: _l, ...summary } = await info(ctx, name);
        out.push(summary);
      }
    } catch {
      // Not a map (data objects can share blockerm with maps; v0 maps need a hint), or damaged:
      // `vlmc info <name>` reports the fault.
    }
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The map entries of a volume (for export, du and hashing). */
export async function entries(
  ctx: MapperContext,
  name: string,
  opts: LoadOptions = {},
): Promise<readonly MapEntry[]> {
  ctx.checkOpen();
  return (await repairing(ctx, () => ctx.locks.current(name, opts))).entries;
}
