import { archipError } from '@archipelago/libxseg';
import type { MapperContext } from '../context.js';
import { isOwned, isReadonly, isZero, zeroEntry } from '../map.js';
import type { LoadOptions } from '../types.js';
import { openVolume } from './map-io.js';

/**
 * Turns block `index` back into the zero block (trim / write-zeroes of a whole block). The map
 * entry is written first; an object this volume owned is deleted afterwards.
 */
export async function discard(
  ctx: MapperContext,
  name: string,
  index: number,
  opts: LoadOptions = {},
): Promise<void> {
  ctx.checkOpen();
  const vol = ctx.locks.cached(name, true) ?? (await openVolume(ctx, name, opts, true));
  if (isReadonly(vol.map)) throw archipError('EREADONLY', `"${name}" is a snapshot; writes are refused`);
  if (index < 0 || index >= vol.map.entries.length)
    throw archipError('ERANGE', `block ${index} is past the end of "${name}"`);
  while (vol.barrier) await vol.barrier;
  await vol.entryLocks.run(index, async () => {
    const e = vol.map.entries[index]!;
    if (isZero(e)) return;
    await ctx.locks.verify(name); // still ours (fencing)
    await ctx.store.writeEntry(vol, index, zeroEntry());
    if (isOwned(e)) await ctx.blockerb.delete(e.name);
  });
}
