/**
 * The bodies of the hot commands (`info`, `snapshot`, `create`, `map`, `unmap`, `showmapped`),
 * shared by their oclif commands
 * (src/commands/) and the fast dispatch (./main.ts), which runs them without loading oclif. They
 * import nothing of oclif: the fast bundle (scripts/bundle.mjs) checks that.
 */
import { formatSizeExact, parseSize } from '@archipelago/cli-kit';
import type { LoadOptions, VolumeInfo } from '@archipelago/mapper';
import {
  createVolume,
  type Lineage,
  listMapped,
  type MapOptions,
  type MappedEntry,
  type MappedStatus,
  mapVolume,
  type Session,
  snapshotVolume,
  unmapVolume,
  volumeInfo,
} from '@archipelago/runtime';
import { infoLines, mappedTable } from '../format.js';

/** Prints one line of human output (nothing with `--json`). */
export type Say = (line: string) => void;

/** `vlmc info NAME`. */
export async function infoCommand(
  session: Session,
  name: string,
  load: LoadOptions,
  say: Say,
): Promise<VolumeInfo & Lineage> {
  const { info, mapped } = await volumeInfo(session, name, { lineage: true, load });
  for (const line of infoLines(info)) say(lineageNotes(line, info));
  if (mapped) say(`mapped:      ${mapped.uri} (pid ${mapped.pid})`);
  return info;
}

/** The `parent`/`origin` row of `infoLines`, with what the lineage record adds (removed, flattened). */
function lineageNotes(line: string, info: Lineage): string {
  if (info.parentRemoved && /^parent:/.test(line))
    return line.replace(/\(snapshot\)$/, '(snapshot, removed)');
  if (info.originRemoved && /^origin:/.test(line)) return `${line} (removed)`;
  if (info.flattened && /^parent:/.test(line)) return `${line.replace(/\(none\)$/, 'none')} (flattened)`;
  return line;
}

/** `vlmc snapshot NAME SNAP`. */
export async function snapshotCommand(
  session: Session,
  name: string,
  snap: string,
  say: Say,
): Promise<VolumeInfo> {
  const { info, mapped } = await snapshotVolume(session, name, snap);
  say(`created snapshot ${info.name} of ${mapped ? 'mapped ' : ''}volume ${name}`);
  return info;
}

/**
 * `vlmc create NAME [--size SIZE] [--snap SNAP]`; `load` (the v0 flags' load options) is asked
 * for only with `snap`, after `size` is parsed (so a bad value fails in the same order as before).
 */
export async function createCommand(
  session: Session,
  name: string,
  flags: { size?: string | undefined; snap?: string | undefined; load: () => LoadOptions },
  say: Say,
): Promise<VolumeInfo> {
  const info = await createVolume(session, name, {
    ...(flags.size !== undefined ? { size: parseSize(flags.size) } : {}),
    ...(flags.snap !== undefined ? { snap: flags.snap, load: flags.load() } : {}),
  });
  const clone = flags.snap === undefined ? '' : ` as a clone of snapshot ${flags.snap}`;
  say(`created volume ${info.name} (${formatSizeExact(info.size)})${clone}`);
  return info;
}

/**
 * `vlmc map NAME [...]`: the NBD URI on stdout, or with `fuse` the loop device or else the file
 * alone (one line: `dev=$(vlmc map ... --device loop)`).
 */
export async function mapCommand(
  session: Session,
  name: string,
  opts: MapOptions,
  say: Say,
): Promise<MappedEntry> {
  const entry = await mapVolume(session, name, opts);
  if (entry.fuse) {
    say(entry.device ?? entry.fuse);
    return entry;
  }
  say(entry.uri);
  if (entry.device) say(`attached ${entry.device}`);
  if (entry.vhostUser) say(`vhost-user-blk on ${entry.vhostUser}`);
  return entry;
}

/** `vlmc unmap TARGET` (a volume name, NBD URI, device or FUSE file). */
export async function unmapCommand(
  session: Session,
  target: string,
  say: Say,
): Promise<{ volume: string; stale: boolean }> {
  const r = await unmapVolume(session, target);
  say(r.stale ? `removed stale mapping of ${r.volume} (pid ${r.pid} was gone)` : `unmapped ${r.volume}`);
  return { volume: r.volume, stale: r.stale };
}

/** `vlmc showmapped`. */
export async function showmappedCommand(session: Session, say: Say): Promise<MappedStatus[]> {
  const all = await listMapped(session);
  if (all.length === 0) say('no mapped volumes');
  else for (const line of mappedTable(all)) say(line);
  return all;
}
