/**
 * The vocabulary of the model-based tests (model.ts, concurrent-model.ts): the ops they draw,
 * the commands an op becomes against a model state (absolute byte ranges and sizes), what a
 * command does to the model, how it runs on a real Composer, and how a real store is compared
 * with the model. No test framework here: the child processes of the concurrent test run it too.
 */
import { ArchipelagoError } from '@archipelago/libxseg';
import type { Composer } from '../composer.js';

export const BS = 1024; // small blocks: many objects per volume, fast runs
export const NAMES = ['va', 'vb', 'vc', 'sa', 'sb'] as const;
export type Name = (typeof NAMES)[number];

/**
 * An op as drawn. Ranges are relative to the volume's size when the op is resolved (so most I/O
 * lands inside the volume and hits shared blocks), with an explicit small chance of reaching
 * past the end; a clone grows its snapshot by `grow` bytes.
 */
export type Op =
  | { op: 'create'; name: Name; size: number }
  | { op: 'write'; name: Name; at: number; span: number; past: boolean; byte: number }
  | { op: 'zero'; name: Name; at: number; span: number; past: boolean; noHole: boolean }
  | { op: 'snapshot'; name: Name; snap: Name }
  | { op: 'clone'; snap: Name; name: Name; grow: number }
  | { op: 'resize'; name: Name; size: number }
  | { op: 'rename'; name: Name; to: Name }
  | { op: 'remove'; name: Name };

/** A command: an op made absolute against a model state, so that it means the same in any order. */
export type Cmd =
  | { op: 'create'; name: string; size: number }
  | { op: 'write'; name: string; offset: number; length: number; byte: number }
  | { op: 'zero'; name: string; offset: number; length: number; noHole: boolean }
  | { op: 'snapshot'; name: string; snap: string }
  | { op: 'clone'; snap: string; name: string; size: number }
  | { op: 'resize'; name: string; size: number }
  | { op: 'rename'; name: string; to: string }
  | { op: 'remove'; name: string };

export interface ModelVolume {
  bytes: Uint8Array;
  readonly: boolean;
}

/** Volumes by name: the model, or what a real store holds. */
export type Model = Map<string, ModelVolume>;

/** The concrete [offset, offset+length) of a write/zero op against a volume of `size` bytes. */
function rangeOf(
  o: { at: number; span: number; past: boolean },
  size: number,
): { offset: number; length: number } {
  const offset = Math.floor((o.at / 1000) * size);
  if (o.past) return { offset, length: size - offset + 1 };
  const room = size - offset;
  return { offset, length: Math.max(1, Math.min(room, Math.ceil((o.span / 1000) * Math.min(room, 3 * BS)))) };
}

/** The command `o` is against `model` (sizes of missing volumes count as 0). */
export function resolve(model: Model, o: Op): Cmd {
  switch (o.op) {
    case 'write':
    case 'zero': {
      const { at, span, past, ...rest } = o;
      return { ...rest, ...rangeOf({ at, span, past }, model.get(o.name)?.bytes.length ?? 0) };
    }
    case 'clone':
      return {
        op: 'clone',
        snap: o.snap,
        name: o.name,
        size: Math.max(1, (model.get(o.snap)?.bytes.length ?? 0) + o.grow),
      };
    default:
      return o;
  }
}

/** A copy of `model` that shares nothing with it. */
export function copyModel(model: Model): Model {
  return new Map([...model].map(([n, v]) => [n, { bytes: v.bytes.slice(), readonly: v.readonly }]));
}

/** What the model says a command does: the new state, or the error code the real system must give. */
export function apply(model: Model, o: Cmd): string | null {
  const v = 'name' in o ? model.get(o.name) : undefined;
  switch (o.op) {
    case 'create':
      if (v) return 'EEXIST_VOLUME';
      model.set(o.name, { bytes: new Uint8Array(o.size), readonly: false });
      return null;
    case 'write':
    case 'zero': {
      if (!v) return 'ENOENT_VOLUME';
      if (v.readonly) return 'EREADONLY';
      if (o.offset + o.length > v.bytes.length) return 'ERANGE';
      v.bytes.fill(o.op === 'write' ? o.byte : 0, o.offset, o.offset + o.length);
      return null;
    }
    case 'snapshot': {
      if (!v) return 'ENOENT_VOLUME';
      if (v.readonly) return 'EREADONLY';
      if (o.snap === o.name || model.has(o.snap)) return 'EEXIST_VOLUME';
      model.set(o.snap, { bytes: v.bytes.slice(), readonly: true });
      return null;
    }
    case 'clone': {
      const s = model.get(o.snap);
      if (!s) return 'ENOENT_VOLUME';
      if (!s.readonly) return 'ENOTSNAPSHOT';
      if (o.size < s.bytes.length) return 'EINVAL_SIZE';
      if (model.has(o.name)) return 'EEXIST_VOLUME';
      const bytes = new Uint8Array(o.size);
      bytes.set(s.bytes);
      model.set(o.name, { bytes, readonly: false });
      return null;
    }
    case 'resize': {
      if (!v) return 'ENOENT_VOLUME';
      if (v.readonly) return 'EREADONLY';
      const bytes = new Uint8Array(o.size);
      bytes.set(v.bytes.subarray(0, Math.min(o.size, v.bytes.length)));
      v.bytes = bytes;
      return null;
    }
    case 'rename': {
      if (!v) return 'ENOENT_VOLUME';
      if (model.has(o.to)) return 'EEXIST_VOLUME';
      model.delete(o.name);
      model.set(o.to, v);
      return null;
    }
    case 'remove':
      if (!v) return 'ENOENT_VOLUME';
      model.delete(o.name);
      return null;
  }
}

/** Runs a command on the real stack. */
export async function run(c: Composer, o: Cmd): Promise<void> {
  const m = c.mapper;
  switch (o.op) {
    case 'create':
      await m.create(o.name, { size: o.size, blocksize: BS });
      return;
    case 'write':
      await c.write(o.name, o.offset, Buffer.alloc(o.length, o.byte));
      return;
    case 'zero':
      await c.writeZeroes(o.name, o.offset, o.length, { noHole: o.noHole });
      return;
    case 'snapshot':
      await c.snapshot(o.name, o.snap);
      return;
    case 'clone':
      await m.clone(o.snap, o.name, { size: o.size });
      return;
    case 'resize':
      await m.resize(o.name, o.size);
      return;
    case 'rename':
      await m.rename(o.name, o.to);
      return;
    case 'remove':
      await c.remove(o.name);
      return;
  }
}

/** Runs a command: null when it succeeds, else the ArchipelagoError it fails with. */
export async function failure(c: Composer, o: Cmd): Promise<ArchipelagoError | null> {
  try {
    await run(c, o);
    return null;
  } catch (e) {
    if (!ArchipelagoError.isInstance(e)) throw e;
    return e;
  }
}

/** Runs a command: null when it succeeds, the code of the ArchipelagoError it fails with. */
export async function outcome(c: Composer, o: Cmd): Promise<string | null> {
  return (await failure(c, o))?.code ?? null;
}

/** Every live volume of a real store (from the volume list), read back whole. */
export async function readStore(c: Composer): Promise<Model> {
  const out: Model = new Map();
  for (const s of await c.mapper.list())
    out.set(s.name, { bytes: await c.read(s.name, 0, s.size), readonly: s.readonly });
  return out;
}

/** The first way `real` differs from `model` (names, kinds, sizes, then bytes), or null. */
export function difference(real: Model, model: Model): string | null {
  const names = (m: Model) => [...m.keys()].sort().join(',');
  if (names(real) !== names(model))
    return `the volumes are [${names(real)}], the model has [${names(model)}]`;
  for (const [name, want] of model) {
    const got = real.get(name) as ModelVolume;
    if (got.readonly !== want.readonly)
      return `"${name}" is ${got.readonly ? 'a snapshot' : 'writable'}, the model says otherwise`;
    if (got.bytes.length !== want.bytes.length)
      return `"${name}" has ${got.bytes.length} bytes, the model ${want.bytes.length}`;
    const at = got.bytes.findIndex((b, i) => b !== want.bytes[i]);
    if (at >= 0) return `"${name}" differs at byte ${at}: ${got.bytes[at]}, the model has ${want.bytes[at]}`;
  }
  return null;
}
