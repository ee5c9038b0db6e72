/**
 * The volume's life cycle in the model-based test (model.ts): besides the ops of model-ops.ts, a
 * sequence restores removed volumes from the trash, runs gc (with the trash purge first, as
 * `vlmc gc` runs it with `[mapperd] trash_ttl` 0, or without it, as while entries are young),
 * rolls volumes back to snapshots of their lineage and flattens clones.
 *
 * The model keeps what these need beyond bytes: the trash (removed volumes, by the name they had,
 * oldest first), and each map's lineage (a record id, a snapshot's origin volume, a clone's
 * parent snapshot) as the mapper records it (ops/lineage.ts): ids move with renames, removes and
 * restores, so a rollback is allowed exactly when the snapshot was taken of the volume (under
 * any name since), is the parent the volume was cloned from, or is a snapshot of a clone (not
 * flattened) of a snapshot of it (import-diff's staging).
 */
import type { Blocker } from '@archipelago/blocker';
import { ObjFlag } from '@archipelago/mapfile';
import { collectGarbage, type Mapper } from '@archipelago/mapper';
import type { Composer } from '../composer.js';
import { apply, type Cmd, type Model, type ModelVolume, run } from './model-ops.js';

/** The life-cycle commands (absolute already: they name volumes only). */
export type LifeCmd =
  | { op: 'restore'; name: string }
  | { op: 'gc'; purge: boolean }
  | { op: 'rollback'; name: string; snap: string }
  | { op: 'flatten'; name: string };

export type AnyCmd = Cmd | LifeCmd;

interface Lineage {
  id: number;
  /** A snapshot's volume (its record id, and its name when the snapshot was taken). */
  origin: number | null;
  originName: string;
  /** A clone's parent snapshot (its record id, and its name then); null once flattened. */
  parent: number | null;
  parentName: string;
}

/** The model of volumes, their trash and their lineage. */
export class LifeModel {
  readonly vols: Model = new Map();
  /** Removed volumes, oldest first, under the name they had. */
  readonly trash: Array<{ name: string; vol: ModelVolume }> = [];
  /** By volume object: renames, removes and restores move the object, so it follows them. */
  private readonly lineage = new WeakMap<ModelVolume, Lineage>();
  private ids = 0;

  private record(v: ModelVolume | undefined, link: Partial<Lineage> = {}): void {
    if (v)
      this.lineage.set(v, {
        origin: null,
        originName: '',
        parent: null,
        parentName: '',
        ...link,
        id: ++this.ids,
      });
  }

  /** The live map named `name` when its record id is `id`. */
  private byRef(name: string, id: number | null): Lineage | null {
    const v = this.vols.get(name);
    const l = v && this.lin(v);
    return l && id !== null && l.id === id ? l : null;
  }

  /**
   * Whether `s` is of `v`'s lineage for a rollback (ops/rollback.ts `checkLineage`): a snapshot of
   * it, its parent, or a snapshot of a clone (not flattened) of a snapshot of it (each map found
   * under the name its referrer recorded, with the recorded id).
   */
  private rollsBackTo(v: ModelVolume, s: ModelVolume): boolean {
    const lv = this.lin(v);
    const ls = this.lin(s);
    if (ls.origin === lv.id || lv.parent === ls.id) return true;
    const clone = this.byRef(ls.originName, ls.origin);
    const base = clone && this.byRef(clone.parentName, clone.parent);
    return base?.origin === lv.id;
  }

  private lin(v: ModelVolume): Lineage {
    const l = this.lineage.get(v);
    if (!l) throw new Error('model: a volume without lineage');
    return l;
  }

  /** What `cmd` does to the model: null, or the error code the real system must give. */
  apply(cmd: AnyCmd): string | null {
    const { vols } = this;
    switch (cmd.op) {
      case 'remove': {
        const v = vols.get(cmd.name);
        const r = apply(vols, cmd);
        if (r === null && v) this.trash.push({ name: cmd.name, vol: v });
        return r;
      }
      case 'create': {
        const r = apply(vols, cmd);
        if (r === null) this.record(vols.get(cmd.name));
        return r;
      }
      case 'snapshot': {
        const r = apply(vols, cmd);
        if (r === null)
          this.record(vols.get(cmd.snap), { origin: this.lin(vols.get(cmd.name)!).id, originName: cmd.name });
        return r;
      }
      case 'clone': {
        const r = apply(vols, cmd);
        if (r === null)
          this.record(vols.get(cmd.name), { parent: this.lin(vols.get(cmd.snap)!).id, parentName: cmd.snap });
        return r;
      }
      case 'restore': {
        const at = this.trash.findLastIndex((t) => t.name === cmd.name);
        if (at < 0) return 'ENOENT_VOLUME';
        if (vols.has(cmd.name)) return 'EEXIST_VOLUME';
        vols.set(cmd.name, this.trash[at]!.vol);
        this.trash.splice(at, 1);
        return null;
      }
      case 'gc':
        if (cmd.purge) this.trash.length = 0;
        return null;
      case 'rollback': {
        if (cmd.snap === cmd.name) return 'EINVAL';
        const v = vols.get(cmd.name);
        if (!v) return 'ENOENT_VOLUME';
        if (v.readonly) return 'EREADONLY';
        const s = vols.get(cmd.snap);
        if (!s) return 'ENOENT_VOLUME';
        if (!s.readonly) return 'ENOTSNAPSHOT';
        if (!this.rollsBackTo(v, s)) return 'EINVAL';
        v.bytes = s.bytes.slice();
        return null;
      }
      case 'flatten': {
        const v = vols.get(cmd.name);
        if (!v) return 'ENOENT_VOLUME';
        if (v.readonly) return 'EREADONLY';
        this.lin(v).parent = null;
        return null;
      }
      default:
        return apply(vols, cmd);
    }
  }
}

/** The real stack a life-cycle command runs on. */
export interface LifeStack {
  composer: Composer;
  mapper: Mapper;
  blockerm: Blocker;
  blockerb: Blocker;
}

/** Runs a command on the real stack: null when it succeeds, else the ArchipelagoError code. */
export async function runLife(s: LifeStack, cmd: AnyCmd): Promise<void> {
  const { composer, mapper } = s;
  switch (cmd.op) {
    case 'restore':
      await mapper.restoreTrash(cmd.name);
      return;
    case 'gc':
      // As `vlmc gc` runs it (runtime gcStore): the trash purge under the gc lock, then the mark.
      await collectGarbage({
        blockerm: s.blockerm,
        blockerb: s.blockerb,
        graceMs: 0,
        ...(cmd.purge ? { prepare: () => mapper.purgeExpiredTrash(Date.now(), 0) } : {}),
      });
      return;
    case 'rollback':
      await composer.frozen(cmd.name, () => mapper.rollback(cmd.name, cmd.snap));
      return;
    case 'flatten':
      await mapper.flatten(cmd.name);
      return;
    default:
      await run(composer, cmd);
  }
}

/**
 * The data objects a live map or trash entry names that blockerb no longer has (gc must never
 * free one), as sentences (not looked for without `objects`); and the trash as the mapper lists
 * it (original names, oldest first).
 */
export async function missingObjects(
  s: LifeStack,
  objects = true,
): Promise<{ missing: string[]; trash: string[] }> {
  const trash = await s.mapper.listTrash();
  const missing: string[] = [];
  const maps = objects ? (await s.mapper.list()).filter((v) => !v.incomplete).map((v) => v.name) : [];
  for (const m of objects ? [...maps, ...trash.map((t) => t.entry)] : []) {
    for (const e of await s.mapper.entries(m)) {
      if (e.flags & ObjFlag.ZERO) continue;
      if (!(await s.blockerb.exists(e.name))) missing.push(`${m} names ${e.name}, which is gone`);
    }
  }
  return { missing, trash: trash.map((t) => t.name) };
}
