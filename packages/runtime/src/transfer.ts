/**
 * Import a raw image into a new volume, and export a volume to a sparse raw file.
 *
 * Both move whole blocks (the volume's block size, 4 MiB by default) with a few blocks in flight,
 * and neither spends storage on zeros: an all-zero block of the image stays a zero block of the
 * volume (no object), and a zero block of the volume stays a hole in the exported file.
 */
import { constants } from 'node:fs';
import { type FileHandle, open, stat } from 'node:fs/promises';
import { addressAlignment, largeBuffer } from '@archipelago/fastio';
import { ArchipelagoError, fromSystemError } from '@archipelago/libxseg';
import { DEFAULT_BLOCKSIZE, ObjFlag } from '@archipelago/mapfile';
import { type LoadOptions, withGcHold } from '@archipelago/mapper';
import type { Runtime } from './types.js';

/** Blocks in flight by default. */
export const DEFAULT_INFLIGHT = 8;

/**
 * Blocks in flight by default on import: its O_DIRECT writes wait for the disk, which needs more
 * of them queued to stay busy (1 GiB here: 8 → 1.24 s, 16 → 1.13 s, 32 no better).
 */
export const DEFAULT_IMPORT_INFLIGHT = 16;

/**
 * Bytes copied between background flushes: of the exported file (the page cache would otherwise
 * hold all of it until the final fsync and leave the disk idle meanwhile), and of blockerb on
 * import (a bulk runtime's blockers write back; flushing the blocker, not the volume, is no
 * barrier: the copy goes on meanwhile).
 */
export const FLUSH_EVERY = 64 * 1024 * 1024;

/** Starts `flush()` after every `every` bytes noted, one at a time; `drain()` waits for the last. */
function backgroundFlusher(every: number, flush: () => Promise<void>) {
  let pending = 0;
  let running: Promise<void> | null = null;
  let failure: unknown = null;
  return {
    note(bytes: number): void {
      if (failure !== null) throw failure;
      pending += bytes;
      if (pending < every || running) return;
      pending = 0;
      running = flush()
        .catch((e: unknown) => {
          failure = e;
        })
        .finally(() => {
          running = null;
        });
    },
    async drain(): Promise<void> {
      await running;
      if (failure !== null) throw failure;
    },
  };
}

export interface TransferOptions {
  /** Blocks in flight (default 8). */
  inflight?: number;
  /** Bytes between background flushes (default FLUSH_EVERY). */
  flushEvery?: number;
  /** Called with the bytes done so far (zero blocks count as done). */
  onProgress?: (done: number, total: number) => void;
  /**
   * Export: how to load the map (a Pithos v0 map: `{ assumeV0: true, v0Size }`). A v0 map is read
   * straight from its content-addressed blocks in blockerb (it is read-only, nothing is copied up).
   */
  load?: LoadOptions;
}

export interface TransferStats {
  volume: string;
  file: string;
  /** Bytes covered (the image or volume size). */
  bytes: number;
  blocksize: number;
  /** Blocks in the volume. */
  blocks: number;
  /** Blocks that carried data and were written. */
  written: number;
  /** Blocks skipped because they were all zeros (or zero blocks of the volume). */
  zeroSkipped: number;
  seconds: number;
  mibPerSec: number;
}

let zeros: Buffer = Buffer.alloc(0);
/** True when `b` holds only zero bytes (a memcmp against a shared zero buffer). */
export function isAllZero(b: Uint8Array): boolean {
  if (zeros.length < b.length) zeros = largeBuffer(b.length).fill(0);
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).equals(zeros.subarray(0, b.length));
}

/** Runs `work(i)` for i in [0, n) with at most `limit` running at once; stops at the first failure. */
async function forEachBlock(
  n: number,
  limit: number,
  work: (i: number, slot: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async (slot: number) => {
    while (!failed && next < n) {
      const i = next++;
      try {
        await work(i, slot);
      } catch (e) {
        failed = true;
        throw e;
      }
    }
  };
  const results = await Promise.allSettled(Array.from({ length: Math.min(limit, n) }, (_, s) => worker(s)));
  const bad = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (bad) throw bad.reason;
}

async function readFully(fh: FileHandle, buf: Buffer, length: number, position: number): Promise<void> {
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) {
      throw new ArchipelagoError(
        'EIO',
        `unexpected end of input at byte ${position + got} (the file shrank while being read)`,
      );
    }
    got += bytesRead;
  }
}

async function writeFully(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  let put = 0;
  while (put < data.length) {
    const { bytesWritten } = await fh.write(data, put, data.length - put, position + put);
    put += bytesWritten;
  }
}

function fileError(e: unknown, file: string, what: string): ArchipelagoError {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const details = { file, errno: code };
  if (code === 'ENOENT')
    return new ArchipelagoError('EINVAL', `${what} ${file}: no such file or directory`, {
      cause: e,
      details,
    });
  if (code === 'EACCES' || code === 'EPERM') {
    return new ArchipelagoError('EINVAL', `${what} ${file}: permission denied`, { cause: e, details });
  }
  if (code === 'EISDIR')
    return new ArchipelagoError('EINVAL', `${what} ${file}: it is a directory`, { cause: e, details });
  return fromSystemError(e, `${what} ${file}`);
}

function finish(stats: Omit<TransferStats, 'seconds' | 'mibPerSec'>, started: number): TransferStats {
  const seconds = (performance.now() - started) / 1000;
  return { ...stats, seconds, mibPerSec: seconds > 0 ? stats.bytes / (1024 * 1024) / seconds : 0 };
}

/**
 * Creates volume `name` with the size of `file` and copies the file into it. All-zero blocks are
 * skipped (they stay zero blocks). Fails with EEXIST_VOLUME when the volume exists. When the copy
 * fails, the half-filled volume is removed again.
 *
 * The volume is created INCOMPLETE (where the mapper can: the in-process one) and made a volume
 * only once the data and then the map entries are durable: an import killed before that leaves
 * a volume `vlmc info` shows as incomplete, that nothing can open, and that `vlmc remove` removes
 * (or, killed before the map was written, no volume at all).
 */
export function importFile(
  rt: Runtime,
  file: string,
  name: string,
  opts: TransferOptions = {},
): Promise<TransferStats> {
  // The data goes before the map entries naming it (bulk mode: long before): a gc hold keeps gc
  // off the new objects meanwhile (see @archipelago/mapper gc.ts).
  return withGcHold(rt.blockerm, { what: `import ${name}` }, () => importFileHeld(rt, file, name, opts));
}

async function importFileHeld(
  rt: Runtime,
  file: string,
  name: string,
  opts: TransferOptions,
): Promise<TransferStats> {
  const started = performance.now();
  const inflight = Math.max(1, opts.inflight ?? DEFAULT_IMPORT_INFLIGHT);
  let fh: FileHandle;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    throw fileError(e, file, 'cannot open');
  }
  try {
    const st = await fh.stat();
    if (!st.isFile())
      throw new ArchipelagoError('EINVAL', `${file} is not a regular file`, { details: { file } });
    const size = st.size;
    if (size === 0)
      throw new ArchipelagoError('EINVAL_SIZE', `${file} is empty: a volume needs at least one byte`);
    const info = await rt.mapper.create(name, { size, incomplete: true });
    const bs = info.blocksize;
    const blocks = info.objects;
    // Page-aligned (O_DIRECT takes them without a bounce copy), on huge pages where possible.
    const buffers = Array.from({ length: Math.min(inflight, blocks) }, () => largeBuffer(bs));
    let written = 0;
    let zeroSkipped = 0;
    let done = 0;
    const flusher = backgroundFlusher(opts.flushEvery ?? FLUSH_EVERY, () => rt.blockerb.flush());
    try {
      await forEachBlock(blocks, inflight, async (i, slot) => {
        const offset = i * bs;
        const len = Math.min(bs, size - offset);
        const buf = buffers[slot]!.subarray(0, len);
        try {
          await readFully(fh, buf, len, offset);
        } catch (e) {
          throw fileError(e, file, 'cannot read');
        }
        if (isAllZero(buf)) zeroSkipped++;
        else {
          await rt.composer.write(name, offset, buf);
          written++;
          flusher.note(len);
        }
        done += len;
        opts.onProgress?.(done, size);
      });
      // The data before the map entries that name it, and both before the volume is complete.
      await flusher.drain();
      await rt.blockerb.flush();
      await rt.composer.flush(name);
      if (info.incomplete) {
        if (!rt.mapper.complete) {
          throw new ArchipelagoError(
            'ENOTSUP',
            `the mapper made "${name}" incomplete but cannot complete it`,
          );
        }
        await rt.mapper.complete(name);
      }
    } catch (e) {
      // Do not leave a volume with half an image in it behind.
      await flusher.drain().catch(() => {});
      await rt.composer.remove(name).catch(() => {});
      throw e;
    }
    return finish({ volume: name, file, bytes: size, blocksize: bs, blocks, written, zeroSkipped }, started);
  } finally {
    await fh.close().catch(() => {});
  }
}

/** What both exports start from: blocks in flight, how to load the map, the map's facts and entries. */
async function exportSource(rt: Runtime, name: string, opts: TransferOptions) {
  const load = opts.load ?? {};
  return {
    inflight: Math.max(1, opts.inflight ?? DEFAULT_INFLIGHT),
    load,
    info: await rt.mapper.info(name, load),
    entries: await rt.mapper.entries(name, load),
  };
}

/**
 * Writes volume `name` to `file` (created, or truncated) as a sparse raw image: the file is sized
 * to the volume, zero blocks and all-zero blocks are left as holes, the rest is written with
 * pwrite, and the file is fsynced at the end.
 */
export async function exportVolume(
  rt: Runtime,
  name: string,
  file: string,
  opts: TransferOptions = {},
): Promise<TransferStats> {
  const started = performance.now();
  const { inflight, load, info, entries } = await exportSource(rt, name, opts);
  try {
    const st = await stat(file);
    if (!st.isFile()) {
      throw new ArchipelagoError('EINVAL', `${file} is not a regular file; export writes a sparse raw file`, {
        details: { file },
      });
    }
  } catch (e) {
    if (ArchipelagoError.isInstance(e)) throw e;
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fileError(e, file, 'cannot stat');
  }
  let fh: FileHandle;
  try {
    fh = await open(file, 'w');
  } catch (e) {
    throw fileError(e, file, 'cannot create');
  }
  let directHandle: FileHandle | null = null;
  try {
    const size = info.size;
    const bs = info.blocksize;
    const blocks = info.objects;
    await fh.truncate(size);
    // Whole aligned blocks go to the file with O_DIRECT from the page-aligned slot buffers: no
    // page cache to fill (fresh pages are slow to touch on a VM) and no dirty backlog for the
    // final sync. The file system may refuse O_DIRECT (tmpfs): then everything is buffered.
    directHandle = await openDirect(file);
    let direct = directHandle;
    let written = 0;
    let zeroSkipped = 0;
    let done = 0;
    // One warm buffer per slot, reused for every block it moves (fresh 4 MiB buffers per block
    // spent more time faulting in memory than reading).
    const buffers: Buffer[] = [];
    const volumes = rt.composer;
    const flusher = backgroundFlusher(FLUSH_EVERY, () => fh.datasync());
    await forEachBlock(blocks, inflight, async (i, slot) => {
      const offset = i * bs;
      const len = Math.min(bs, size - offset);
      const e = entries[i];
      if (!e || e.flags & ObjFlag.ZERO) zeroSkipped++;
      else {
        let data: Buffer;
        if (load.assumeV0) data = await rt.blockerb.read(e.name, 0, len);
        else if (volumes.readInto) {
          buffers[slot] ??= largeBuffer(bs);
          data = await volumes.readInto(name, offset, buffers[slot]!.subarray(0, len));
        } else data = await volumes.read(name, offset, len);
        if (isAllZero(data)) zeroSkipped++;
        else {
          try {
            if (direct && len % DIRECT_ALIGN === 0 && addressAlignment(data) >= DIRECT_ALIGN) {
              try {
                await writeFully(direct, data, offset);
              } catch (err) {
                if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
                direct = null; // refused after all: buffered from now on
                await writeFully(fh, data, offset);
              }
            } else await writeFully(fh, data, offset);
            flusher.note(len);
          } catch (err) {
            throw fileError(err, file, 'cannot write');
          }
          written++;
        }
      }
      done += len;
      opts.onProgress?.(done, size);
    });
    try {
      await flusher.drain();
      await fh.sync();
    } catch (err) {
      throw fileError(err, file, 'cannot sync');
    }
    return finish({ volume: name, file, bytes: size, blocksize: bs, blocks, written, zeroSkipped }, started);
  } finally {
    await directHandle?.close().catch(() => {});
    await fh.close().catch(() => {});
  }
}

/** O_DIRECT needs offsets, lengths and memory aligned to the device's block size; 4 KiB is safe. */
const DIRECT_ALIGN = 4096;

/** A second handle on `file` with O_DIRECT, or null where the file system refuses it. */
async function openDirect(file: string): Promise<FileHandle | null> {
  if (constants.O_DIRECT === undefined) return null;
  try {
    return await open(file, constants.O_WRONLY | constants.O_DIRECT);
  } catch {
    return null;
  }
}

/** Where a streamed import starts when it is not told the size: 64 blocks, doubled as data comes. */
const STREAM_GROW_BLOCKS = 64;

/** Resolves once `out` took `data` (its write callback), so the caller follows its pace. */
export function writeTo(out: NodeJS.WritableStream, data: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    out.write(data, (e) => (e ? reject(fromSystemError(e, 'cannot write the output')) : resolve()));
  });
}

/**
 * Writes volume `name` to the stream `out` (`vlmc export NAME -`: stdout), every byte in order,
 * zero blocks as zeros (a pipe has no holes). `inflight` blocks are read ahead while the stream
 * takes the earlier ones. Nothing but the volume's bytes goes to `out`; `file` of the stats is `-`.
 */
export async function exportVolumeToStream(
  rt: Runtime,
  name: string,
  out: NodeJS.WritableStream,
  opts: TransferOptions = {},
): Promise<TransferStats> {
  const started = performance.now();
  const { inflight, load, info, entries } = await exportSource(rt, name, opts);
  const { size, blocksize: bs, objects: blocks } = info;
  const zeroBlock = Buffer.alloc(bs);
  const reads = new Map<number, Promise<Buffer | null>>();
  const readBlock = (i: number): Promise<Buffer | null> => {
    const e = entries[i];
    if (!e || e.flags & ObjFlag.ZERO) return Promise.resolve(null);
    const len = Math.min(bs, size - i * bs);
    return load.assumeV0 ? rt.blockerb.read(e.name, 0, len) : rt.composer.read(name, i * bs, len);
  };
  let written = 0;
  let zeroSkipped = 0;
  let done = 0;
  try {
    for (let i = 0; i < blocks; i++) {
      for (let j = i; j < Math.min(blocks, i + inflight); j++) if (!reads.has(j)) reads.set(j, readBlock(j));
      const len = Math.min(bs, size - i * bs);
      const data = await reads.get(i)!;
      reads.delete(i);
      if (data === null || isAllZero(data)) {
        zeroSkipped++;
        await writeTo(out, zeroBlock.subarray(0, len));
      } else {
        written++;
        await writeTo(out, data);
      }
      done += len;
      opts.onProgress?.(done, size);
    }
  } finally {
    // Reads started ahead of a failure must not reject unhandled.
    for (const p of reads.values()) p.catch(() => {});
  }
  return finish(
    { volume: name, file: '-', bytes: size, blocksize: bs, blocks, written, zeroSkipped },
    started,
  );
}

/**
 * Creates volume `name` from the bytes of the stream `input` (`vlmc import - NAME`: stdin), which
 * has no size up front. With `size`, the volume has that size and the stream may hold at most that
 * many bytes (the rest reads as zeros); without, the volume grows as data arrives (64 blocks,
 * doubled when full) and is cut to the bytes read at the end. As `importFile`: all-zero blocks are
 * skipped, the volume stays INCOMPLETE until the data and the map are durable (a killed import
 * leaves an incomplete volume that `vlmc remove` removes), and a failed import removes it.
 */
export function importStream(
  rt: Runtime,
  input: AsyncIterable<Uint8Array>,
  name: string,
  opts: TransferOptions & { size?: number } = {},
): Promise<TransferStats> {
  return withGcHold(rt.blockerm, { what: `import ${name}` }, () => importStreamHeld(rt, input, name, opts));
}

async function importStreamHeld(
  rt: Runtime,
  input: AsyncIterable<Uint8Array>,
  name: string,
  opts: TransferOptions & { size?: number },
): Promise<TransferStats> {
  const started = performance.now();
  const inflight = Math.max(1, opts.inflight ?? DEFAULT_IMPORT_INFLIGHT);
  const fixed = opts.size;
  const first = await rt.mapper.create(name, {
    size: fixed ?? STREAM_GROW_BLOCKS * DEFAULT_BLOCKSIZE,
    incomplete: true,
  });
  const bs = first.blocksize;
  let capacity = first.size;
  let offset = 0;
  let written = 0;
  let zeroSkipped = 0;
  const free: Buffer[] = [];
  let buffers = 0;
  const pending = new Set<Promise<void>>();
  let failure: unknown = null;
  const flusher = backgroundFlusher(opts.flushEvery ?? FLUSH_EVERY, () => rt.blockerb.flush());
  const take = async (): Promise<Buffer> => {
    while (free.length === 0 && buffers >= inflight) await Promise.race(pending);
    if (failure !== null) throw failure;
    if (free.length > 0) return free.pop()!;
    buffers++;
    return largeBuffer(bs);
  };
  const settle = async () => {
    await Promise.all(pending);
    if (failure !== null) throw failure;
  };
  /** Writes the block in `buf[0, len)` at `offset`, growing the volume first when needed. */
  const put = async (buf: Buffer, len: number): Promise<void> => {
    if (fixed !== undefined && offset + len > fixed) {
      throw new ArchipelagoError(
        'EINVAL_SIZE',
        `the input holds more than the ${fixed} bytes of --size; give a larger --size, or none (the volume then takes the input's size)`,
      );
    }
    if (offset + len > capacity) {
      await settle();
      capacity = Math.max(offset + len, Math.min(capacity * 2, MAX_STREAM_SIZE));
      await rt.composer.frozen(name, () => rt.mapper.resize(name, capacity));
    }
    const data = buf.subarray(0, len);
    if (isAllZero(data)) {
      zeroSkipped++;
      free.push(buf);
    } else {
      const p: Promise<void> = rt.composer
        .write(name, offset, data)
        .then(
          () => {
            written++;
            flusher.note(len);
          },
          (e: unknown) => {
            failure ??= e;
          },
        )
        .finally(() => {
          pending.delete(p);
          free.push(buf);
        });
      pending.add(p);
    }
    offset += len;
    opts.onProgress?.(offset, fixed ?? offset);
  };
  try {
    let buf = await take();
    let fill = 0;
    try {
      for await (const chunk of input) {
        let at = 0;
        while (at < chunk.length) {
          const n = Math.min(bs - fill, chunk.length - at);
          buf.set(chunk.subarray(at, at + n), fill);
          fill += n;
          at += n;
          if (fill === bs) {
            await put(buf, bs);
            buf = await take();
            fill = 0;
          }
        }
      }
    } catch (e) {
      if (ArchipelagoError.isInstance(e)) throw e;
      throw fromSystemError(e, 'cannot read the input');
    }
    if (fill > 0) await put(buf, fill);
    await settle();
    if (offset === 0)
      throw new ArchipelagoError('EINVAL_SIZE', 'the input is empty: a volume needs at least one byte');
    const size = fixed ?? offset;
    if (size !== capacity) await rt.composer.frozen(name, () => rt.mapper.resize(name, size));
    // The data before the map entries that name it, and both before the volume is complete.
    await flusher.drain();
    await rt.blockerb.flush();
    await rt.composer.flush(name);
    if (first.incomplete) {
      if (!rt.mapper.complete)
        throw new ArchipelagoError('ENOTSUP', `the mapper made "${name}" incomplete but cannot complete it`);
      await rt.mapper.complete(name);
    }
    const blocks = Math.ceil(size / bs);
    return finish(
      { volume: name, file: '-', bytes: size, blocksize: bs, blocks, written, zeroSkipped },
      started,
    );
  } catch (e) {
    await Promise.allSettled(pending);
    await flusher.drain().catch(() => {});
    await rt.composer.remove(name).catch(() => {});
    throw e;
  }
}

/** The largest volume a streamed import grows to (the mapper's limit, 1 PiB). */
const MAX_STREAM_SIZE = 2 ** 50;
