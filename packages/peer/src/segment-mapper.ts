/**
 * SegmentMapper: a MapperApi whose calls go through the segment to a mapperd peer
 * (mapper-wire.ts). Idempotent calls (map for read/write, info, open, close, discard, flush, …) are
 * retried when mapperd died or stopped (client.ts); map changes that are not idempotent (create,
 * clone, snapshot, rename, resize, remove) are not: their failure is reported.
 *
 * `openVolumes()` lists the volumes this client opened: explicitly (`openVolume`), or implicitly
 * — with `trackOpens`, the first operation on a volume notes whether mapperd had it open before
 * and has it open after, as the embedded Mapper's `openVolumes()` would (vlmc closes those again).
 */
import { ArchipelagoError, encodeTargetPayload, XF } from '@archipelago/libxseg';
import type {
  CloneOptions,
  CreateFromEntriesOptions,
  CreateOptions,
  HashOptions,
  HashResult,
  LoadOptions,
  MapEntry,
  MapperApi,
  ObjectSegment,
  VolumeInfo,
  VolumeSummary,
} from '@archipelago/mapper';
import { PeerClient, type PeerClientOptions, type Send } from './client.js';
import { decodeSegments, MapperOp, mapReplyRoom } from './mapper-wire.js';
import { fromJson, toJson } from './wire.js';

export interface SegmentMapperOptions extends PeerClientOptions {
  /** Note which volumes this client's operations opened (see the class comment). */
  trackOpens?: boolean;
}

/** What mapperd says about itself. */
export interface MapperHello {
  /** The identity its volume locks carry. */
  identity: string;
  /** Volumes it holds open. */
  open: string[];
}

export class SegmentMapper extends PeerClient implements MapperApi {
  private readonly opened = new Set<string>();
  private readonly trackOpens: boolean;
  /** Per volume: whether mapperd had it open before this client's first operation on it. */
  private readonly before = new Map<string, Promise<boolean>>();
  private readonly checked = new Set<string>();

  constructor(opts: SegmentMapperOptions) {
    super(opts, 'mapperd');
    this.trackOpens = opts.trackOpens === true;
  }

  private flags(opts?: LoadOptions): number {
    return opts?.assumeV0 ? XF.ASSUMEV0 : 0;
  }

  private async json<T>(what: string, o: Send, retry: boolean): Promise<T> {
    const r = await this.request(what, { reserve: 4096, ...o }, retry);
    try {
      return fromJson<T>(r.data.subarray(0, r.serviced), what);
    } finally {
      r.release();
    }
  }

  private args(v: unknown): { data: Buffer; size: number } {
    const data = toJson(v);
    return { data, size: data.length };
  }

  /** Runs `fn`, an operation on volume `name`, noting whether it opened the volume. */
  async track<T>(name: string, fn: () => Promise<T>): Promise<T> {
    if (!this.trackOpens || this.checked.has(name)) return fn();
    let was = this.before.get(name);
    if (!was) {
      was = this.hello().then((h) => h.open.includes(name));
      this.before.set(name, was);
    }
    const wasOpen = await was;
    const out = await fn();
    if (!this.checked.has(name)) {
      this.checked.add(name);
      if (!wasOpen && (await this.hello()).open.includes(name)) this.opened.add(name);
    }
    return out;
  }

  /** Drops `name` from `openVolumes()` (it was closed or removed another way). */
  forget(name: string): void {
    this.opened.delete(name);
  }

  /** mapperd's identity and the volumes it holds open. */
  hello(): Promise<MapperHello> {
    return this.json<MapperHello>('hello', { op: MapperOp.HELLO }, true);
  }

  create(name: string, opts: CreateOptions): Promise<VolumeInfo> {
    return this.json(`create ${name}`, { op: MapperOp.CLONE, target: name, ...this.args(opts) }, false);
  }

  clone(source: string, name: string, opts: CloneOptions = {}): Promise<VolumeInfo> {
    if (typeof source !== 'string' || source === '')
      throw new ArchipelagoError('EINVAL_NAME', 'clone: the source snapshot name is missing');
    return this.json(
      `clone ${source} ${name}`,
      { op: MapperOp.CLONE, target: name, ...this.args({ ...opts, source }) },
      false,
    );
  }

  createFromEntries(name: string, opts: CreateFromEntriesOptions): Promise<VolumeInfo> {
    return this.json(`create ${name}`, { op: MapperOp.CREATE, target: name, ...this.args(opts) }, false);
  }

  /** Hashes in mapperd; `onProgress` is not called over the segment. */
  hash(name: string, _opts: HashOptions = {}): Promise<HashResult> {
    return this.json(`hash ${name}`, { op: MapperOp.HASH, target: name, reserve: 1 << 20 }, true);
  }

  snapshot(name: string, snap: string): Promise<VolumeInfo> {
    const data = encodeTargetPayload(snap);
    return this.track(name, () =>
      this.json(`snapshot ${name}`, { op: MapperOp.SNAPSHOT, target: name, data, size: data.length }, false),
    );
  }

  async remove(name: string, opts: LoadOptions = {}): Promise<void> {
    await this.simple(`remove ${name}`, { op: MapperOp.DELETE, target: name, flags: this.flags(opts) });
    this.opened.delete(name);
  }

  async rename(name: string, newName: string): Promise<VolumeInfo> {
    const data = encodeTargetPayload(newName);
    const info = await this.json<VolumeInfo>(
      `rename ${name}`,
      { op: MapperOp.RENAME, target: name, data, size: data.length },
      false,
    );
    this.opened.delete(name);
    return info;
  }

  resize(name: string, size: number): Promise<VolumeInfo> {
    if (!Number.isSafeInteger(size) || size < 0)
      throw new ArchipelagoError('EINVAL_SIZE', `resize: size must be an integer >= 0, got ${size}`);
    return this.track(name, () =>
      this.json(`resize ${name}`, { op: MapperOp.TRUNCATE, target: name, offset: size }, false),
    );
  }

  async openVolume(name: string, opts: LoadOptions = {}): Promise<VolumeInfo> {
    const info = await this.json<VolumeInfo>(
      `open ${name}`,
      { op: MapperOp.OPEN, target: name, flags: this.flags(opts) },
      true,
    );
    this.opened.add(name);
    return info;
  }

  async closeVolume(name: string): Promise<void> {
    await this.simple(`close ${name}`, { op: MapperOp.CLOSE, target: name }, true);
    this.opened.delete(name);
  }

  lock(name: string): Promise<void> {
    return this.simple(`lock ${name}`, { op: MapperOp.LOCK, target: name }, true);
  }

  unlock(name: string, opts: { force?: boolean } = {}): Promise<void> {
    return this.simple(`unlock ${name}`, {
      op: MapperOp.UNLOCK,
      target: name,
      flags: opts.force ? XF.FORCE : 0,
    });
  }

  info(name: string, opts: LoadOptions = {}): Promise<VolumeInfo> {
    return this.json(`info ${name}`, { op: MapperOp.INFO, target: name, flags: this.flags(opts) }, true);
  }

  list(): Promise<VolumeSummary[]> {
    return this.json('list', { op: MapperOp.LIST, reserve: 64 * 1024 }, true);
  }

  entries(name: string, opts: LoadOptions = {}): Promise<readonly MapEntry[]> {
    return this.json(
      `entries ${name}`,
      { op: MapperOp.ENTRIES, target: name, flags: this.flags(opts), reserve: 64 * 1024 },
      true,
    );
  }

  private async segments(op: number, name: string, offset: number, length: number, opts?: LoadOptions) {
    const what = `${op === MapperOp.MAPW ? 'mapWrite' : 'mapRead'} ${name}`;
    const r = await this.request(
      what,
      { op, target: name, offset, size: length, flags: this.flags(opts), reserve: mapReplyRoom(length) },
      true,
    );
    try {
      return decodeSegments(r.data.subarray(0, r.serviced), offset);
    } catch (e) {
      throw new ArchipelagoError('EIO', `${what}: malformed map reply (${(e as Error).message})`, {
        cause: e,
      });
    } finally {
      r.release();
    }
  }

  mapRead(name: string, offset: number, length: number, opts?: LoadOptions): Promise<ObjectSegment[]> {
    return this.track(name, () => this.segments(MapperOp.MAPR, name, offset, length, opts));
  }

  mapWrite(name: string, offset: number, length: number, opts?: LoadOptions): Promise<ObjectSegment[]> {
    return this.track(name, () => this.segments(MapperOp.MAPW, name, offset, length, opts));
  }

  assertWritable(name: string, opts: LoadOptions = {}): Promise<void> {
    return this.track(name, () =>
      this.simple(
        `assertWritable ${name}`,
        { op: MapperOp.ASSERTWRITABLE, target: name, flags: this.flags(opts) },
        true,
      ),
    );
  }

  discard(name: string, index: number, opts: LoadOptions = {}): Promise<void> {
    if (!Number.isSafeInteger(index) || index < 0)
      throw new ArchipelagoError('EINVAL', `discard: block index must be an integer >= 0, got ${index}`);
    return this.track(name, () =>
      this.simple(
        `discard ${name}`,
        { op: MapperOp.DISCARD, target: name, offset: index, flags: this.flags(opts) },
        true,
      ),
    );
  }

  flush(): Promise<void> {
    return this.simple('flush', { op: MapperOp.FLUSH }, true);
  }

  openVolumes(): string[] {
    return [...this.opened];
  }

  /** Leaves the port; volumes stay open in mapperd (close them first if that is wanted). */
  close(): Promise<void> {
    return this.disconnect();
  }
}
