import { formatSize } from '@archipelago/cli-kit';
import { ArchipelagoError } from '@archipelago/libxseg';
import { ObjFlag } from '@archipelago/mapfile';
import type { MapEntry } from '@archipelago/mapper';
import type { Runtime } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';

/** `vlmc du NAME`: one map. */
export interface VolumeUsage {
  name: string;
  readonly: boolean;
  /** Logical size in bytes. */
  size: number;
  blocks: number;
  /** Blocks backed by an object (not the zero block). */
  allocated: number;
  /** Distinct objects the map references. */
  objects: number;
  /** Of those, content-addressed (hashed) objects. */
  contentObjects: number;
  /** Bytes of all allocated blocks' objects, counted once per block (what a copy would take). */
  bytesReferenced: number;
  /** Bytes of the distinct objects (what the map really takes in blockerb). */
  bytesStored: number;
  /** Bytes saved inside this map by blocks sharing an object: referenced - stored. */
  bytesDeduplicated: number;
  /** Bytes of the distinct objects that other live maps reference too. */
  bytesShared: number;
  /** Bytes of the distinct objects only this map references. */
  bytesExclusive: number;
  /** Referenced objects that are missing from blockerb (they read as zeros). */
  missingObjects: number;
}

/** `vlmc du`: the whole store. */
export interface StoreUsage {
  maps: number;
  /** Sum of the logical sizes of every live map. */
  size: number;
  allocated: number;
  /** Bytes of every allocated block of every map, counted per block. */
  bytesReferenced: number;
  /** Distinct objects referenced by some map, and their bytes. */
  objects: number;
  bytesStored: number;
  /** referenced - stored: what sharing (snapshots, clones, content addressing) saves. */
  bytesDeduplicated: number;
  contentObjects: number;
  /** Every object in blockerb, and their bytes. */
  blockerObjects: number;
  blockerBytes: number;
  /** Objects no live map references (left by deleted gateway files or interrupted work). */
  unreferencedObjects: number;
  unreferencedBytes: number;
}

const CONTENT = /^[0-9a-f]{64}$/;
const isZero = (e: MapEntry) => (e.flags & ObjFlag.ZERO) !== 0;

export default class Du extends VlmcCommand {
  static override summary =
    'Show storage use: logical size, allocated objects, bytes stored, shared and deduplicated.';

  static override description =
    `With a NAME, the use of one volume, snapshot or hashed map: its logical size, the blocks \
backed by objects, the bytes of the distinct objects it references ("stored"), the bytes saved by \
blocks sharing one object ("deduplicated"), and the bytes it shares with other maps. Without a \
NAME, the whole store, including objects that no map references.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> vol1 --json',
  ];

  static override args = {
    name: Args.string({ required: false, description: 'Volume, snapshot or hashed map.' }),
  };

  async run(): Promise<VolumeUsage | StoreUsage> {
    const { args } = await this.parse(Du);
    const rt = await this.session().runtime();
    const sizes = new Map<string, number | null>();
    const sizeOf = async (o: string) => {
      let s = sizes.get(o);
      if (s === undefined) {
        s = (await rt.blockerb.info(o))?.size ?? null;
        sizes.set(o, s);
      }
      return s;
    };
    if (args.name !== undefined) {
      const u = await volumeUsage(rt, args.name, sizeOf);
      this.table([
        ['name', u.name],
        ['size', `${formatSize(u.size)} (${u.size} bytes)`],
        ['blocks', `${u.blocks} (${u.allocated} allocated)`],
        ['objects', `${u.objects} (${u.contentObjects} content-addressed)`],
        ['referenced', bytes(u.bytesReferenced)],
        ['stored', bytes(u.bytesStored)],
        ['deduplicated', bytes(u.bytesDeduplicated)],
        ['shared', bytes(u.bytesShared)],
        ['exclusive', bytes(u.bytesExclusive)],
        ...(u.missingObjects ? [['missing objects', String(u.missingObjects)] as [string, string]] : []),
      ]);
      return u;
    }
    const u = await storeUsage(rt, sizeOf);
    this.table([
      ['maps', String(u.maps)],
      ['size', `${formatSize(u.size)} (${u.size} bytes)`],
      ['allocated', `${u.allocated} blocks`],
      ['objects', `${u.objects} referenced (${u.contentObjects} content-addressed)`],
      ['referenced', bytes(u.bytesReferenced)],
      ['stored', bytes(u.bytesStored)],
      ['deduplicated', bytes(u.bytesDeduplicated)],
      ['blocker', `${u.blockerObjects} objects, ${bytes(u.blockerBytes)}`],
      ['unreferenced', `${u.unreferencedObjects} objects, ${bytes(u.unreferencedBytes)}`],
    ]);
    return u;
  }

  private table(rows: Array<[string, string]>): void {
    const w = Math.max(...rows.map(([k]) => k.length)) + 1;
    for (const [k, v] of rows) this.say(`${`${k}:`.padEnd(w)} ${v}`);
  }
}

const bytes = (n: number) => `${formatSize(n)} (${n} bytes)`;

async function allMaps(rt: Runtime): Promise<Array<{ name: string; entries: readonly MapEntry[] }>> {
  const out: Array<{ name: string; entries: readonly MapEntry[] }> = [];
  for (const v of await rt.mapper.list()) {
    try {
      out.push({ name: v.name, entries: await rt.mapper.entries(v.name) });
    } catch (e) {
      if (!ArchipelagoError.is(e, 'ENOENT_VOLUME')) throw e; // removed meanwhile
    }
  }
  return out;
}

async function volumeUsage(
  rt: Runtime,
  name: string,
  sizeOf: (o: string) => Promise<number | null>,
): Promise<VolumeUsage> {
  const info = await rt.mapper.info(name);
  const entries = await rt.mapper.entries(name);
  const distinct = new Set<string>();
  let allocated = 0;
  let referenced = 0;
  for (const e of entries) {
    if (isZero(e)) continue;
    allocated++;
    distinct.add(e.name);
  }
  const others = new Set<string>();
  for (const m of await allMaps(rt)) {
    if (m.name === name) continue;
    for (const e of m.entries) if (!isZero(e) && distinct.has(e.name)) others.add(e.name);
  }
  let stored = 0;
  let shared = 0;
  let missing = 0;
  let content = 0;
  for (const o of distinct) {
    const s = await sizeOf(o);
    if (s === null) missing++;
    stored += s ?? 0;
    if (others.has(o)) shared += s ?? 0;
    if (CONTENT.test(o)) content++;
  }
  for (const e of entries) if (!isZero(e)) referenced += (await sizeOf(e.name)) ?? 0;
  return {
    name,
    readonly: info.readonly,
    size: info.size,
    blocks: entries.length,
    allocated,
    objects: distinct.size,
    contentObjects: content,
    bytesReferenced: referenced,
    bytesStored: stored,
    bytesDeduplicated: referenced - stored,
    bytesShared: shared,
    bytesExclusive: stored - shared,
    missingObjects: missing,
  };
}

async function storeUsage(rt: Runtime, sizeOf: (o: string) => Promise<number | null>): Promise<StoreUsage> {
  const maps = await allMaps(rt);
  const distinct = new Set<string>();
  let size = 0;
  let allocated = 0;
  let referenced = 0;
  for (const v of await rt.mapper.list()) size += v.size;
  for (const m of maps) {
    for (const e of m.entries) {
      if (isZero(e)) continue;
      allocated++;
      distinct.add(e.name);
      referenced += (await sizeOf(e.name)) ?? 0;
    }
  }
  let stored = 0;
  let content = 0;
  for (const o of distinct) {
    stored += (await sizeOf(o)) ?? 0;
    if (CONTENT.test(o)) content++;
  }
  let blockerObjects = 0;
  let blockerBytes = 0;
  let unrefObjects = 0;
  let unrefBytes = 0;
  for await (const o of rt.blockerb.list()) {
    const s = (await sizeOf(o)) ?? 0;
    blockerObjects++;
    blockerBytes += s;
    if (!distinct.has(o)) {
      unrefObjects++;
      unrefBytes += s;
    }
  }
  return {
    maps: maps.length,
    size,
    allocated,
    bytesReferenced: referenced,
    objects: distinct.size,
    bytesStored: stored,
    bytesDeduplicated: referenced - stored,
    contentObjects: content,
    blockerObjects,
    blockerBytes,
    unreferencedObjects: unrefObjects,
    unreferencedBytes: unrefBytes,
  };
}
