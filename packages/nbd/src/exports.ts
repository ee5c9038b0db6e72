import { type FileHandle, open as fsOpen } from 'node:fs/promises';
import { ArchipelagoError, fromSystemError } from '@archipelago/libxseg';
import type { NbdExport, NbdExtent } from './types.js';

/** Allocation granularity of MemoryExport. */
const CHUNK = 64 * 1024;

export interface MemoryExportOptions {
  name: string;
  /** Size in bytes. */
  size: number;
  description?: string;
  readonly?: boolean;
  minBlockSize?: number;
  /** When false, WRITE_ZEROES with FAST_ZERO fails with ENOTSUP (to exercise clients' fallback). */
  fastZero?: boolean;
}

function checkRange(what: string, offset: number, length: number, size: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new ArchipelagoError('EINVAL', `${what}: bad offset/length ${offset}+${length}`);
  }
  if (offset + length > size) {
    throw new ArchipelagoError('ERANGE', `${what}: ${offset}+${length} is past the end (${size} bytes)`, {
      details: { offset, length, size },
    });
  }
}

/**
 * A sparse in-memory export for tests and benchmarks. Storage is allocated in 64 KiB chunks on
 * first write; never-written (or trimmed) chunks read as zeroes and report hole+zero.
 */
export class MemoryExport implements NbdExport {
  readonly name: string;
  readonly description?: string;
  readonly readonly: boolean;
  readonly minBlockSize?: number;
  private readonly bytes: number;
  private readonly canFastZero: boolean;
  private readonly chunks = new Map<number, Buffer>();
  /** Counters for tests: how many calls of each kind reached the export. */
  readonly stats = { reads: 0, writes: 0, flushes: 0, trims: 0, zeroes: 0, fua: 0, blockStatus: 0, cache: 0 };

  constructor(opts: MemoryExportOptions) {
    if (!Number.isSafeInteger(opts.size) || opts.size < 0) {
      throw new ArchipelagoError('EINVAL_SIZE', `MemoryExport: bad size ${opts.size}`);
    }
    this.name = opts.name;
    if (opts.description !== undefined) this.description = opts.description;
    this.readonly = opts.readonly ?? false;
    if (opts.minBlockSize !== undefined) this.minBlockSize = opts.minBlockSize;
    this.bytes = opts.size;
    this.canFastZero = opts.fastZero ?? true;
  }

  size(): number {
    return this.bytes;
  }

  /** Bytes of backing memory in use. */
  allocatedBytes(): number {
    return this.chunks.size * CHUNK;
  }

  /** Synchronous read for tests (same result as `read`). */
  peek(offset: number, length: number): Buffer {
    return this.copyOut(offset, Buffer.allocUnsafe(length));
  }

  private copyOut(offset: number, out: Buffer): Buffer {
    const length = out.length;
    checkRange('read', offset, length, this.bytes);
    let pos = offset;
    while (pos < offset + length) {
      const idx = Math.floor(pos / CHUNK);
      const within = pos - idx * CHUNK;
      const n = Math.min(CHUNK - within, offset + length - pos);
      const c = this.chunks.get(idx);
      if (c) c.copy(out, pos - offset, within, within + n);
      else out.fill(0, pos - offset, pos - offset + n);
      pos += n;
    }
    return out;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.stats.reads++;
    return this.peek(offset, length);
  }

  async readInto(offset: number, target: Buffer): Promise<void> {
    this.stats.reads++;
    this.copyOut(offset, target);
  }

  async write(offset: number, data: Buffer, opts: { fua: boolean }): Promise<void> {
    this.stats.writes++;
    if (opts.fua) this.stats.fua++;
    this.checkWritable('write');
    checkRange('write', offset, data.length, this.bytes);
    let pos = offset;
    const end = offset + data.length;
    while (pos < end) {
      const idx = Math.floor(pos / CHUNK);
      const within = pos - idx * CHUNK;
      const n = Math.min(CHUNK - within, end - pos);
      let c = this.chunks.get(idx);
      if (!c) {
        c = Buffer.alloc(CHUNK);
        this.chunks.set(idx, c);
      }
      data.copy(c, within, pos - offset, pos - offset + n);
      pos += n;
    }
  }

  async flush(): Promise<void> {
    this.stats.flushes++;
  }

  async trim(offset: number, length: number, opts: { fua: boolean }): Promise<void> {
    this.stats.trims++;
    if (opts.fua) this.stats.fua++;
    this.checkWritable('trim');
    checkRange('trim', offset, length, this.bytes);
    this.zero(offset, length, true);
  }

  async writeZeroes(
    offset: number,
    length: number,
    opts: { fua: boolean; noHole: boolean; fastZero: boolean },
  ): Promise<void> {
    this.stats.zeroes++;
    if (opts.fua) this.stats.fua++;
    this.checkWritable('writeZeroes');
    checkRange('writeZeroes', offset, length, this.bytes);
    if (opts.fastZero && !this.canFastZero) {
      throw new ArchipelagoError('ENOTSUP', 'MemoryExport: fast zeroing disabled');
    }
    this.zero(offset, length, !opts.noHole);
  }

  async cache(offset: number, length: number): Promise<void> {
    this.stats.cache++;
    checkRange('cache', offset, length, this.bytes);
  }

  async blockStatus(offset: number, length: number): Promise<NbdExtent[]> {
    this.stats.blockStatus++;
    checkRange('blockStatus', offset, length, this.bytes);
    const out: NbdExtent[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const idx = Math.floor(pos / CHUNK);
      const n = Math.min((idx + 1) * CHUNK, end) - pos;
      const hole = !this.chunks.has(idx);
      const last = out[out.length - 1];
      if (last && last.hole === hole) last.length += n;
      else out.push({ length: n, hole, zero: hole });
      pos += n;
    }
    return out;
  }

  /** Zeroes a range; whole chunks are released when `punch` is set, partial ones are filled. */
  private zero(offset: number, length: number, punch: boolean): void {
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const idx = Math.floor(pos / CHUNK);
      const within = pos - idx * CHUNK;
      const n = Math.min(CHUNK - within, end - pos);
      const c = this.chunks.get(idx);
      const whole = n === CHUNK || (idx * CHUNK + within + n >= this.bytes && within === 0);
      if (c) {
        if (punch && whole) this.chunks.delete(idx);
        else c.fill(0, within, within + n);
      } else if (!punch) {
        this.chunks.set(idx, Buffer.alloc(CHUNK));
      }
      pos += n;
    }
  }

  private checkWritable(what: string): void {
    if (this.readonly) throw new ArchipelagoError('EREADONLY', `MemoryExport ${this.name}: ${what} refused`);
  }
}

export interface FileExportOptions {
  /** Export name (default: the path). */
  name?: string;
  description?: string;
  readonly?: boolean;
  minBlockSize?: number;
}

const ZERO_BUF_SIZE = 1024 * 1024;
let zeroBuf: Buffer | undefined;

/**
 * A raw file (or block device) exported through fs/promises. Flush and FUA use fdatasync.
 * TRIM is a hint and does nothing; WRITE_ZEROES writes zeroes (FAST_ZERO therefore fails with
 * ENOTSUP); block status reports everything as data.
 */
export class FileExport implements NbdExport {
  readonly name: string;
  readonly description?: string;
  readonly readonly: boolean;
  readonly minBlockSize?: number;
  private closed = false;

  private constructor(
    private readonly fh: FileHandle,
    private readonly bytes: number,
    readonly path: string,
    opts: FileExportOptions,
  ) {
    this.name = opts.name ?? path;
    if (opts.description !== undefined) this.description = opts.description;
    this.readonly = opts.readonly ?? false;
    if (opts.minBlockSize !== undefined) this.minBlockSize = opts.minBlockSize;
  }

  /** Opens an existing file; its current size is the export size. */
  static async open(path: string, opts: FileExportOptions = {}): Promise<FileExport> {
    let fh: FileHandle;
    try {
      fh = await fsOpen(path, opts.readonly ? 'r' : 'r+');
    } catch (e) {
      throw fromSystemError(e, `FileExport: open ${path}`);
    }
    try {
      const st = await fh.stat();
      return new FileExport(fh, st.size, path, opts);
    } catch (e) {
      await fh.close().catch(() => {});
      throw fromSystemError(e, `FileExport: stat ${path}`);
    }
  }

  size(): number {
    return this.bytes;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    await this.readInto(offset, buf);
    return buf;
  }

  async readInto(offset: number, buf: Buffer): Promise<void> {
    const length = buf.length;
    checkRange('read', offset, length, this.bytes);
    let done = 0;
    try {
      while (done < length) {
        const { bytesRead } = await this.fh.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) {
          buf.fill(0, done); // the file shrank under us: read as zeroes
          break;
        }
        done += bytesRead;
      }
    } catch (e) {
      throw fromSystemError(e, `FileExport ${this.name}: read`);
    }
  }

  async write(offset: number, data: Buffer, opts: { fua: boolean }): Promise<void> {
    this.checkWritable('write');
    checkRange('write', offset, data.length, this.bytes);
    try {
      await this.writeAll(data, offset);
      if (opts.fua) await this.fh.datasync();
    } catch (e) {
      throw fromSystemError(e, `FileExport ${this.name}: write`);
    }
  }

  async flush(): Promise<void> {
    if (this.readonly) return;
    try {
      await this.fh.datasync();
    } catch (e) {
      throw fromSystemError(e, `FileExport ${this.name}: flush`);
    }
  }

  async trim(offset: number, length: number, _opts: { fua: boolean }): Promise<void> {
    this.checkWritable('trim');
    checkRange('trim', offset, length, this.bytes);
  }

  async writeZeroes(
    offset: number,
    length: number,
    opts: { fua: boolean; noHole: boolean; fastZero: boolean },
  ): Promise<void> {
    this.checkWritable('writeZeroes');
    checkRange('writeZeroes', offset, length, this.bytes);
    if (opts.fastZero) throw new ArchipelagoError('ENOTSUP', 'FileExport: no fast zeroing');
    zeroBuf ??= Buffer.alloc(ZERO_BUF_SIZE);
    try {
      let pos = offset;
      const end = offset + length;
      while (pos < end) {
        const n = Math.min(ZERO_BUF_SIZE, end - pos);
        await this.writeAll(zeroBuf.subarray(0, n), pos);
        pos += n;
      }
      if (opts.fua) await this.fh.datasync();
    } catch (e) {
      throw fromSystemError(e, `FileExport ${this.name}: writeZeroes`);
    }
  }

  async blockStatus(offset: number, length: number): Promise<NbdExtent[]> {
    checkRange('blockStatus', offset, length, this.bytes);
    return [{ length, hole: false, zero: false }];
  }

  private async writeAll(data: Buffer, offset: number): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, offset + done);
      if (bytesWritten === 0) throw new ArchipelagoError('EIO', `FileExport ${this.name}: short write`);
      done += bytesWritten;
    }
  }

  private checkWritable(what: string): void {
    if (this.readonly) throw new ArchipelagoError('EREADONLY', `FileExport ${this.name}: ${what} refused`);
  }
}
