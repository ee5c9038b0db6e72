/** Reading about maps: info, list, entries. */
import { decodeHeaderV2, detectVersion, type MapEntry, MapFlag, objectCount } from '@archipelago/mapfile';
import type { MapperContext } from '../context.js';
import { describe } from '../map.js';
import type { LoadOptions, VolumeInfo, VolumeSummary } from '../types.js';

/** What a map is, from the cached map when the volume is open, else loaded fresh. */
export async function info(ctx: MapperContext, name: string, opts: LoadOptions = {}): Promise<VolumeInfo> {
  ctx.checkOpen();
  const map = await ctx.locks.current(name, opts);
  return describe(map, await ctx.locks.owner(name));
}

/**
 * Every live map in blockerm, sorted by name. Reads only headers (a v1 map is decoded whole),
 * so listing costs one small read per map whatever the volume sizes.
 */
export async function list(ctx: MapperContext): Promise<VolumeSummary[]> {
  ctx.checkOpen();
  const out: VolumeSummary[] = [];
  for await (const obj of ctx.store.objects()) {
    if (/_[0-9a-f]{16}$/.test(obj)) continue; // map blocks
    const head = await ctx.store.readHead(obj).catch(() => null);
    if (!head) continue;
    const name = obj.startsWith('archip_') ? obj.slice('archip_'.length) : obj;
    try {
      const version = detectVersion(head.bytes, obj);
      if (version === 2) {
        const h = decodeHeaderV2(head.bytes.subarray(0, head.stored), obj);
        if (h.flags & MapFlag.DELETED) continue;
        out.push({
          name,
          size: h.size,
          blocksize: h.blocksize,
          epoch: h.epoch,
          readonly: (h.flags & MapFlag.READONLY) !== 0,
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
  return (await ctx.locks.current(name, opts)).entries;
}
