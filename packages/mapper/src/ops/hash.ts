/** Content-addressing snapshots: hash, createHashedMap. */
import { ArchipelagoError, archipError } from '@archipelago/libxseg';
import { merkleRoot, ObjFlag, ZERO_BLOCK } from '@archipelago/mapfile';
import type { MapperContext } from '../context.js';
import { disownHashedMap, withHashedMapLock } from '../gc.js';
import { isContentName, isReadonly, isZero, type LoadedMap } from '../map.js';
import { pool } from '../mutex.js';
import type { HashOptions, HashResult } from '../types.js';
import { createFromEntries } from './create.js';
import { repairing } from './repair.js';

/**
 * Hashes snapshot `name` (reference §2.7, the mapper X_HASH the original disabled): every block
 * that is not the zero block nor already content-addressed is content-addressed in blockerb
 * (`blockerb.hash`: stored once under its SHA-256, trailing zeros stripped); then a read-only map
 * of the content names is written, named by the Pithos Merkle root of the block hashes, and can
 * be cloned like any snapshot. Hashing again, or hashing another snapshot with the same content,
 * finds the same map and writes nothing. A map of another size that already has the root's name
 * (the same blocks up to trailing zeros) makes the name `<root>.<size>`.
 */
export async function hash(ctx: MapperContext, name: string, opts: HashOptions = {}): Promise<HashResult> {
  ctx.checkOpen();
  const blockerb = ctx.blockerb;
  const hashObject = blockerb.hash?.bind(blockerb);
  if (!hashObject) {
    throw archipError('ENOTSUP', `the ${blockerb.kind} blocker cannot hash objects; use a blocker that can`);
  }
  const src = await repairing(ctx, () => ctx.locks.current(name, {}));
  if (!isReadonly(src)) {
    throw archipError('ENOTSNAPSHOT', `cannot hash "${name}": it is a writable volume; snapshot it first`, {
      details: { volume: name },
    });
  }
  const bs = src.blocksize;
  const n = src.entries.length;
  const hashes: string[] = new Array(n);
  let done = 0;
  let bytes = 0;
  const limit = Math.max(1, Math.min(opts.parallelism ?? Math.min(ctx.parallelism, 16), n || 1));
  await pool(n, limit, async (i) => {
    const e = src.entries[i]!;
    const len = Math.min(bs, src.size - i * bs);
    if (isZero(e)) hashes[i] = ZERO_BLOCK;
    else if ((e.flags & ObjFlag.ARCHIP) === 0 && isContentName(e.name)) hashes[i] = e.name;
    else hashes[i] = await hashObject(e.name, len);
    done++;
    bytes += len;
    opts.onProgress?.(done, n, bytes);
  });
  // A user's map: if the gateway made it, it is the user's now (gc keeps it whatever files name it).
  const made = await withHashedMapLock(ctx.blockerm, merkleRoot(hashes), async () => {
    const m = await createHashedMap(ctx, hashes, src.size, bs);
    await disownHashedMap(ctx.blockerm, m.name);
    return m;
  });
  if (!made.existed) ctx.log.info({ snapshot: name, hashed: made.name }, 'hashed snapshot');
  return { ...made, hashes, size: src.size, blocksize: bs };
}

/**
 * Writes (or finds) the read-only content map of `hashes`: named by their Merkle root, or
 * `<root>.<size>` when a map of another size already has the root's name. Every non-zero hash
 * must name a content object in blockerb (the caller checks). Idempotent: an identical map is
 * reused (`existed`).
 */
export async function createHashedMap(
  ctx: MapperContext,
  hashes: readonly string[],
  size: number,
  blocksize: number,
): Promise<{ name: string; root: string; existed: boolean }> {
  ctx.checkOpen();
  const root = merkleRoot(hashes);
  const entries = hashes.map((h) => ({ name: h, readonly: true }));
  const want = { size, blocksize, entries, readonly: true };
  const loadIfThere = (candidate: string) =>
    ctx.store.load(candidate, {}).catch((e: unknown) => {
      if (ArchipelagoError.is(e, 'ENOENT_VOLUME')) return null;
      throw e;
    });
  for (const candidate of [root, `${root}.${size}`]) {
    const existing = await loadIfThere(candidate);
    if (existing) {
      if (sameHashedMap(existing, size, blocksize, hashes)) return { name: candidate, root, existed: true };
      continue;
    }
    try {
      await createFromEntries(ctx, candidate, want);
    } catch (e) {
      // Created concurrently (another process, same content): use theirs when it matches.
      if (!ArchipelagoError.is(e, 'EEXIST_VOLUME') && !ArchipelagoError.is(e, 'ELOCKED')) throw e;
      const theirs = await ctx.store.load(candidate, {}).catch(() => null);
      if (theirs && sameHashedMap(theirs, size, blocksize, hashes))
        return { name: candidate, root, existed: true };
      continue;
    }
    return { name: candidate, root, existed: false };
  }
  throw archipError('EEXIST_VOLUME', `maps named ${root} and ${root}.${size} exist with other contents`, {
    details: { root },
  });
}

/** True when `map` is the read-only content map of `hashes` at that size and block size. */
function sameHashedMap(map: LoadedMap, size: number, blocksize: number, hashes: readonly string[]): boolean {
  if (!isReadonly(map) || map.size !== size || map.blocksize !== blocksize) return false;
  if (map.entries.length !== hashes.length) return false;
  return map.entries.every(
    (e, i) => e.name === hashes[i] && (e.flags & (ObjFlag.WRITABLE | ObjFlag.ARCHIP)) === 0,
  );
}
