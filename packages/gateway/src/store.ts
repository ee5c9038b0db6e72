/**
 * The file store behind the gateway: files are read-only maps of content-addressed blocks.
 *
 * - Block data: content objects in blockerb, named by the SHA-256 of the block with trailing
 *   zeros stripped (the Pithos block hash), each stored once, atomically.
 * - File contents: a read-only map in blockerm named by the Merkle root of the block hashes
 *   (`Mapper.createHashedMap`, the same maps `vlmc hash` builds), so a file is cloneable into a
 *   volume and a hashed snapshot is a file, with no data copied either way.
 * - Names: small JSON records in blockerm, one per container (`gwc.*`) and one per file
 *   (`gwo.*`), named by digests of the names (see names.ts). A record is written whole and
 *   atomically (writeFull) and only after every block and the map are durable, so a failed or
 *   abandoned upload never leaves a visible file.
 * - Reclamation: a map the gateway makes is marked gateway-owned (`gwm.<map>`); `vlmc gc` removes
 *   an owned map once no record names it, and frees its blocks. A commit makes (or finds) the map
 *   and writes the record under the hashed map's lock, which gc takes to remove one, so a record
 *   never names a map gc removed (@archipelago/mapper gc.ts, "gateway-owned hashed maps").
 */
import { createHash } from 'node:crypto';
import { type Blocker, readIntoBuffer } from '@archipelago/blocker';
import { ArchipelagoError } from '@archipelago/libxseg';
import { DEFAULT_BLOCKSIZE, type MapEntry, merkleRoot, ObjFlag, ZERO_BLOCK } from '@archipelago/mapfile';
import {
  disownHashedMap,
  isGatewayOwned,
  type Mapper,
  ownHashedMap,
  withGcHold,
  withHashedMapLock,
} from '@archipelago/mapper';
import { containerKey, containerPrefix, objectKey, objectPrefix } from './names.js';

export interface FileRecord {
  v: 1;
  account: string;
  container: string;
  name: string;
  /** The read-only content map holding the file's blocks. */
  map: string;
  bytes: number;
  blocksize: number;
  /** Pithos top-level hash (Merkle root): X-Object-Hash. */
  hash: string;
  /**
   * MD5 of the contents (hex), what Swift clients check a download against: computed while a
   * streamed PUT arrives, else by reading the file once when it is made (hashmap PUT, bridge).
   * Records written before that held the Merkle root here for those (see `FileStore.withMd5`).
   */
  etag: string;
  contentType: string;
  /** Milliseconds since the epoch. */
  lastModified: number;
  /** X-Object-Meta-* headers, lower-case keys without the prefix. */
  meta: Record<string, string>;
}

export interface ContainerRecord {
  v: 1;
  account: string;
  container: string;
  created: number;
}

export interface StoreOptions {
  blockerm: Blocker;
  blockerb: Blocker;
  mapper: Mapper;
  /** Block size of new files (default 4 MiB). */
  blocksize?: number;
  /** Blocks stored (or read) at once per request (default 4). */
  inflight?: number;
}

/** Content-addressed store of a block, atomic (temp + link) on blockers that offer it. */
interface ContentStore {
  storeContent(h: string, data: Uint8Array): Promise<boolean>;
}
const hasStoreContent = (b: Blocker): b is Blocker & ContentStore =>
  typeof (b as Partial<ContentStore>).storeContent === 'function';

const HEX64 = /^[0-9a-f]{64}$/;
const MD5_HEX = /^[0-9a-f]{32}$/;
/** MD5s computed for old records, by map name (a map's content never changes); bounded. */
const MD5_CACHE_MAX = 4096;
export const isContentName = (s: string) => HEX64.test(s);

/** `block` without trailing zero bytes (subarray, no copy). */
export function stripZeros(block: Buffer): Buffer {
  let end = block.length;
  const probe = 4096;
  while (end >= probe && block.compare(ZEROS, 0, probe, end - probe, end) === 0) end -= probe;
  while (end > 0 && block[end - 1] === 0) end--;
  return block.subarray(0, end);
}
const ZEROS = Buffer.alloc(4 * 1024 * 1024);

/** Bounded-concurrency map over `items`. */
async function pool<T, R>(
  items: readonly T[],
  limit: number,
  fn: (t: T, i: number) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

export class FileStore {
  readonly blockerm: Blocker;
  readonly blockerb: Blocker;
  readonly mapper: Mapper;
  readonly blocksize: number;
  readonly inflight: number;
  private readonly md5s = new Map<string, string>();

  constructor(opts: StoreOptions) {
    this.blockerm = opts.blockerm;
    this.blockerb = opts.blockerb;
    this.mapper = opts.mapper;
    this.blocksize = opts.blocksize ?? DEFAULT_BLOCKSIZE;
    this.inflight = opts.inflight ?? 4;
    if (
      !Number.isInteger(this.blocksize) ||
      this.blocksize < 4096 ||
      (this.blocksize & (this.blocksize - 1)) !== 0
    ) {
      throw new RangeError('FileStore: blocksize must be a power of two >= 4096');
    }
  }

  // ------------------------------------------------------------------ records

  private async readJson<T>(key: string): Promise<T | null> {
    const info = await this.blockerm.info(key);
    if (!info) return null;
    const buf = await this.blockerm.read(key, 0, info.size, { missingOk: true });
    try {
      return JSON.parse(buf.toString('utf8')) as T;
    } catch {
      return null; // a damaged record reads as absent
    }
  }

  private writeJson(key: string, value: unknown): Promise<void> {
    return this.blockerm.writeFull(key, Buffer.from(JSON.stringify(value)));
  }

  async getContainer(account: string, container: string): Promise<ContainerRecord | null> {
    const r = await this.readJson<ContainerRecord>(containerKey(account, container));
    return r && r.account === account && r.container === container ? r : null;
  }

  /** Creates a container; false when it existed. */
  async putContainer(account: string, container: string): Promise<boolean> {
    if (await this.getContainer(account, container)) return false;
    await this.writeJson(containerKey(account, container), {
      v: 1,
      account,
      container,
      created: Date.now(),
    } satisfies ContainerRecord);
    return true;
  }

  async deleteContainer(account: string, container: string): Promise<'deleted' | 'notfound' | 'notempty'> {
    if (!(await this.getContainer(account, container))) return 'notfound';
    for await (const _ of this.blockerm.list(objectPrefix(account, container))) return 'notempty';
    await this.blockerm.delete(containerKey(account, container));
    return 'deleted';
  }

  async listContainers(account: string): Promise<ContainerRecord[]> {
    const keys: string[] = [];
    for await (const k of this.blockerm.list(containerPrefix(account))) keys.push(k);
    const recs = await pool(keys, 16, (k) => this.readJson<ContainerRecord>(k));
    return recs
      .filter((r): r is ContainerRecord => r !== null && r.account === account)
      .sort((a, b) => cmp(a.container, b.container));
  }

  async listObjects(account: string, container: string): Promise<FileRecord[]> {
    const keys: string[] = [];
    for await (const k of this.blockerm.list(objectPrefix(account, container))) keys.push(k);
    const recs = await pool(keys, 16, (k) => this.readJson<FileRecord>(k));
    return recs
      .filter((r): r is FileRecord => r !== null && r.account === account && r.container === container)
      .sort((a, b) => cmp(a.name, b.name));
  }

  async getObject(account: string, container: string, name: string): Promise<FileRecord | null> {
    const r = await this.readJson<FileRecord>(objectKey(account, container, name));
    return r && r.account === account && r.container === container && r.name === name ? r : null;
  }

  async deleteObject(account: string, container: string, name: string): Promise<boolean> {
    if (!(await this.getObject(account, container, name))) return false;
    return this.blockerm.delete(objectKey(account, container, name));
  }

  // ------------------------------------------------------------------ blocks and maps

  /** The file's map entries (one per block). */
  entries(rec: FileRecord): Promise<readonly MapEntry[]> {
    return this.mapper.entries(rec.map);
  }

  /** Block hashes of a file, Pithos style (zero blocks give the zero-block name). */
  async hashes(rec: FileRecord): Promise<string[]> {
    return (await this.entries(rec)).map((e) => (e.flags & ObjFlag.ZERO ? ZERO_BLOCK : e.name));
  }

  /** Stores one block (hashing it); resolves its hash. Each distinct block is stored once. */
  async putBlock(block: Buffer): Promise<string> {
    const data = stripZeros(block);
    if (data.length === 0) return ZERO_BLOCK;
    const h = createHash('sha256').update(data).digest('hex');
    await this.storeVerified(h, data);
    return h;
  }

  /** Stores `data` (already stripped) as content object `h` (its SHA-256) unless it exists. */
  async storeVerified(h: string, data: Buffer): Promise<void> {
    const b = this.blockerb;
    if (hasStoreContent(b)) await b.storeContent(h, data);
    else if (!(await b.exists(h))) await b.writeFull(h, data);
  }

  /**
   * Runs an upload (blocks stored or found stored, then the commit that names them) under a gc
   * `dedup` hold: a block found already stored is not written again, so without the hold a gc run
   * between that check and the commit could sweep it as an old orphan (@archipelago/mapper gc.ts).
   */
  upload<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return withGcHold(this.blockerm, { what: `gateway ${what}`, kind: 'dedup' }, fn);
  }

  /** The hashes of `hashes` that are not stored (the zero block never is), unique, in order. */
  async missing(hashes: readonly string[]): Promise<string[]> {
    const uniq = [...new Set(hashes.filter((h) => h !== ZERO_BLOCK))];
    const there = await pool(uniq, 32, (h) => this.blockerb.exists(h));
    return uniq.filter((_, i) => !there[i]);
  }

  /**
   * The MD5 (hex) of the file of `bytes` bytes whose `blocksize`-byte blocks are `hashes`: its
   * blocks read once, in order, `inflight` ahead (the zero block and bytes past a stored block's
   * content are zeros).
   */
  async md5Of(hashes: readonly string[], bytes: number, blocksize: number): Promise<string> {
    const md5 = createHash('md5');
    const n = Math.ceil(bytes / blocksize);
    const read = (i: number): Promise<Buffer> => {
      const len = Math.min(blocksize, bytes - i * blocksize);
      const h = hashes[i];
      if (h === undefined || h === ZERO_BLOCK) return Promise.resolve(zeroBuf(len));
      const p = this.blockerb.read(h, 0, len);
      p.catch(() => {}); // awaited in order below; an early failure must not go unhandled
      return p;
    };
    const ahead: Promise<Buffer>[] = [];
    let next = 0;
    while (next < n && ahead.length < this.inflight) ahead.push(read(next++));
    while (ahead.length > 0) {
      md5.update(await ahead.shift()!);
      if (next < n) ahead.push(read(next++));
    }
    return md5.digest('hex');
  }

  /**
   * `rec` with its MD5 as ETag. Records written before every file had one hold the Merkle root:
   * their MD5 is computed by reading the file (once per map and process), so every download
   * passes a Swift client's check. Publishing such a file again stores it.
   */
  async withMd5(rec: FileRecord): Promise<FileRecord> {
    if (MD5_HEX.test(rec.etag)) return rec;
    let md5 = this.md5s.get(rec.map);
    if (md5 === undefined) {
      md5 = await this.md5Of(await this.hashes(rec), rec.bytes, rec.blocksize);
      if (this.md5s.size >= MD5_CACHE_MAX) this.md5s.clear();
      this.md5s.set(rec.map, md5);
    }
    return { ...rec, etag: md5 };
  }

  /**
   * Makes the file visible: writes (or finds) the content map of `hashes`, then the record.
   * Every non-zero hash must be stored already. Without `md5` (a streamed PUT computes it), the
   * file is read once to compute it.
   */
  async commit(
    account: string,
    container: string,
    name: string,
    f: {
      hashes: string[];
      bytes: number;
      blocksize: number;
      md5?: string;
      contentType: string;
      meta: Record<string, string>;
    },
  ): Promise<FileRecord> {
    const md5 = f.md5 ?? (await this.md5Of(f.hashes, f.bytes, f.blocksize));
    const root = merkleRoot(f.hashes);
    return withHashedMapLock(this.blockerm, root, async () => {
      const made = await this.makeMap(root, f.hashes, f.bytes, f.blocksize);
      const rec: FileRecord = {
        v: 1,
        account,
        container,
        name,
        map: made.name,
        bytes: f.bytes,
        blocksize: f.blocksize,
        hash: made.root,
        etag: md5,
        contentType: f.contentType,
        lastModified: Date.now(),
        meta: f.meta,
      };
      await this.writeJson(objectKey(account, container, name), rec);
      return rec;
    });
  }

  /**
   * Makes (or finds) the content map of `hashes` under its lock (held by the caller). A map made
   * here is the gateway's: its marker is written before it (for each name the map may take that
   * is not a live map now), so a crash leaves a marker gc clears, never an unowned map nothing
   * would collect; the marker of the name not taken goes. A map found (a user's `vlmc hash`, or
   * another file's) keeps its owner.
   */
  private async makeMap(root: string, hashes: string[], bytes: number, blocksize: number) {
    const marked: string[] = [];
    for (const c of [root, `${root}.${bytes}`]) {
      if ((await this.isLiveMap(c)) || (await isGatewayOwned(this.blockerm, c))) continue;
      await ownHashedMap(this.blockerm, c);
      marked.push(c);
    }
    const made = await this.mapper.createHashedMap(hashes, bytes, blocksize);
    for (const c of marked) if (c !== made.name) await disownHashedMap(this.blockerm, c);
    return made;
  }

  private async isLiveMap(name: string): Promise<boolean> {
    try {
      await this.mapper.info(name);
      return true;
    } catch (e) {
      if (ArchipelagoError.is(e, 'ENOENT_VOLUME')) return false;
      throw e;
    }
  }

  /**
   * Bridge: registers map `mapName` (a snapshot or a hashed map) as a file, without copying data.
   * A snapshot that is not content-addressed yet is hashed first (`Mapper.hash`).
   */
  async registerMap(
    account: string,
    container: string,
    name: string,
    mapName: string,
    f: { contentType: string; meta: Record<string, string> },
  ): Promise<FileRecord> {
    const info = await this.mapper.info(mapName);
    if (!info.readonly) {
      throw new ArchipelagoError('ENOTSNAPSHOT', `"${mapName}" is a writable volume; snapshot it first`);
    }
    const entries = await this.mapper.entries(mapName);
    const hashed = entries.every(
      (e) => e.flags & ObjFlag.ZERO || (isContentName(e.name) && (e.flags & ObjFlag.ARCHIP) === 0),
    );
    const hashes = hashed
      ? entries.map((e) => (e.flags & ObjFlag.ZERO ? ZERO_BLOCK : e.name))
      : (await this.mapper.hash(mapName)).hashes;
    return this.commit(account, container, name, {
      hashes,
      bytes: info.size,
      blocksize: info.blocksize,
      contentType: f.contentType,
      meta: f.meta,
    });
  }

  /** Bridge: a new volume cloned from the file's map (copy-on-write, no data copied). */
  async cloneToVolume(rec: FileRecord, volume: string, size?: number) {
    return this.mapper.clone(rec.map, volume, size === undefined ? {} : { size });
  }

  /** Reads block `e` from `off` into `target` (all of it; zeros past the stored content). */
  async readBlockInto(e: MapEntry, off: number, target: Buffer): Promise<void> {
    if (e.flags & ObjFlag.ZERO) {
      target.fill(0);
      return;
    }
    await readIntoBuffer(this.blockerb, e.name, off, target);
  }

  /** Reads `len` bytes at `off` of block `e` (zeros past the stored content). */
  readBlock(e: MapEntry, off: number, len: number): Promise<Buffer> {
    if (e.flags & ObjFlag.ZERO) return Promise.resolve(zeroBuf(len));
    return this.blockerb.read(e.name, off, len, { missingOk: true });
  }
}

function zeroBuf(len: number): Buffer {
  return len <= ZEROS.length ? ZEROS.subarray(0, len) : Buffer.alloc(len);
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * A streamed upload: bytes in, blocks out. Each full block is hashed and stored while the next
 * one fills, with at most `inflight` blocks stored at once (back-pressure: `push` waits).
 * Memory is bounded by (inflight + 1) blocks whatever the file size.
 */
export class Upload {
  private block: Buffer;
  private fill = 0;
  private index = 0;
  private readonly pending = new Map<number, Promise<void>>();
  private failure: unknown = null;
  readonly hashes: string[] = [];
  bytes = 0;
  private readonly md5: ReturnType<typeof createHash> | null;
  /** Block buffers whose store finished, reused (fresh multi-MiB buffers cost page faults). */
  private readonly spare: Buffer[] = [];

  constructor(
    private readonly store: FileStore,
    readonly blocksize: number = store.blocksize,
    private readonly inflight: number = store.inflight,
    md5 = true,
  ) {
    this.block = Buffer.allocUnsafeSlow(blocksize);
    this.md5 = md5 ? createHash('md5') : null;
  }

  async push(chunk: Buffer): Promise<void> {
    this.md5?.update(chunk);
    this.bytes += chunk.length;
    let at = 0;
    while (at < chunk.length) {
      const n = Math.min(chunk.length - at, this.blocksize - this.fill);
      chunk.copy(this.block, this.fill, at, at + n);
      this.fill += n;
      at += n;
      if (this.fill === this.blocksize) await this.dispatch();
    }
  }

  /** Stores the last partial block and waits for every store; resolves the MD5 (hex). */
  async finish(): Promise<string | undefined> {
    if (this.fill > 0) await this.dispatch();
    await this.drain();
    return this.md5?.digest('hex');
  }

  /** Waits for the stores in flight (after a failure, to leave nothing running). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.pending.values()]);
    if (this.failure) throw this.failure;
  }

  private async dispatch(): Promise<void> {
    if (this.failure) throw this.failure;
    const i = this.index++;
    const full = this.block;
    const data = full.subarray(0, this.fill);
    this.block = this.spare.pop() ?? Buffer.allocUnsafeSlow(this.blocksize);
    this.fill = 0;
    const p = this.store.putBlock(data).then(
      (h) => {
        this.hashes[i] = h;
        this.pending.delete(i);
        this.spare.push(full);
      },
      (e: unknown) => {
        this.failure ??= e;
        this.pending.delete(i);
      },
    );
    this.pending.set(i, p);
    while (this.pending.size >= this.inflight) await Promise.race(this.pending.values());
    if (this.failure) throw this.failure;
  }
}
