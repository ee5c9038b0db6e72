/**
 * Aligned bounce buffers for O_DIRECT.
 *
 * O_DIRECT needs the file offset, the length AND the memory address aligned (to the device's
 * logical block size and DMA alignment, typically 512 bytes). Page alignment matters too: Linux
 * accepts 512-aligned memory, but a direct write from memory that is not page-aligned into newly
 * allocated blocks was measured ~25x slower on ext4 (130 ms instead of 5 ms per 4 MiB).
 *
 * JavaScript cannot see a Buffer's address, and `Buffer.alloc` memory is only malloc-aligned
 * (glibc puts large blocks 16 bytes past a page boundary), so:
 *  0. With the @archipelago/fastio addon, the pool is one `largeBuffer`: its own 2 MiB-aligned
 *     mapping (huge pages where the kernel gives them: on a VM the first touch of 4 KiB pages is
 *     slow), whose alignment the addon reads from the address.
 *  1. Otherwise the pool's memory is a WebAssembly.Memory: V8 maps it with its page allocator, so it starts
 *     on a page boundary. The kernel confirms it: an O_DIRECT read of a probe file into it must
 *     not fail with EINVAL.
 *  2. If that is unavailable or refused, we fall back to `Buffer.alloc(size + 4096)` and find an
 *     aligned window by asking the kernel: O_DIRECT reads of the probe file at successive 8-byte
 *     shifts; the first shift accepted is aligned for this device (512-aligned, maybe not
 *     page-aligned: correct, only slower for new blocks).
 *
 * The memory is cut into CHUNK_SIZE buffers, all starting at an aligned address plus a multiple of
 * 4 KiB. Untouched pages cost no RAM (anonymous memory is committed on first write), and chunks
 * are reused last-in first-out, so only the peak concurrency's worth is ever touched.
 */
import { addressAlignment, largeBuffer } from '@archipelago/fastio';
import * as fsio from './fsio.js';

/** Alignment of offsets, lengths and buffers used for O_DIRECT: safe for 512 B and 4 KiB devices. */
export const DIRECT_ALIGN = 4096;
/** Size of one bounce buffer; larger I/Os go through it in several steps. */
export const CHUNK_SIZE = 1 << 20;
/** The step between probed shifts: 8 bytes, the least alignment any allocator gives. */
const PROBE_STEP = 8;
const WASM_PAGE = 65_536;

export class AlignedPool {
  private readonly free: Buffer[] = [];
  private readonly waiting: Array<(b: Buffer) => void> = [];

  private constructor(
    chunks: Buffer[],
    /** True when the memory is known to be page-aligned (WebAssembly.Memory). */
    readonly pageAligned: boolean,
    /** Keeps the backing memory object alive as long as the pool. */
    readonly memory: unknown,
  ) {
    // Reversed so that take() hands out the lowest chunks first.
    this.free = chunks.reverse();
  }

  /**
   * Allocates `maxChunks` aligned chunks.
   * @param probeFd an fd opened with O_DIRECT on a file of at least DIRECT_ALIGN bytes.
   * Rejects when no aligned memory can be found (the caller then gives up O_DIRECT).
   */
  static async create(probeFd: number, maxChunks = 64): Promise<AlignedPool> {
    const size = maxChunks * CHUNK_SIZE;
    const large = largeBuffer(size);
    if (addressAlignment(large) >= DIRECT_ALIGN) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < maxChunks; i++) chunks.push(large.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE));
      return new AlignedPool(chunks, true, large);
    }
    const wasm = await wasmAligned(probeFd, size);
    const base = wasm ?? (await probedAligned(probeFd, size));
    const chunks: Buffer[] = [];
    for (let i = 0; i < maxChunks; i++) chunks.push(base.buf.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE));
    return new AlignedPool(chunks, wasm !== null, base.memory);
  }

  /** An aligned CHUNK_SIZE buffer; give it back with `put`. Waits while every chunk is in use. */
  take(): Promise<Buffer> {
    const b = this.free.pop();
    if (b) return Promise.resolve(b);
    return new Promise<Buffer>((resolve) => this.waiting.push(resolve));
  }

  put(b: Buffer): void {
    const next = this.waiting.shift();
    if (next) next(b);
    else this.free.push(b);
  }
}

/** Page-aligned memory from a WebAssembly.Memory, or null when unavailable or refused. */
async function wasmAligned(probeFd: number, size: number): Promise<{ buf: Buffer; memory: unknown } | null> {
  // Typed locally: the project's lib settings do not include the WebAssembly namespace.
  const wasm = (
    globalThis as { WebAssembly?: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer } } }
  ).WebAssembly;
  let memory: { buffer: ArrayBuffer };
  try {
    if (!wasm) return null;
    memory = new wasm.Memory({ initial: Math.ceil(size / WASM_PAGE) });
  } catch {
    return null; // e.g. no address space for it under a ulimit -v
  }
  const buf = Buffer.from(memory.buffer, 0, size);
  try {
    await fsio.pread(probeFd, buf, 0, DIRECT_ALIGN, 0);
  } catch (e) {
    if (fsio.errno(e) === 'EINVAL') return null;
    throw e;
  }
  return { buf, memory };
}

/** Device-aligned memory inside a Buffer.alloc, found by asking the kernel. */
async function probedAligned(probeFd: number, size: number): Promise<{ buf: Buffer; memory: unknown }> {
  const raw = Buffer.alloc(size + DIRECT_ALIGN);
  const shift = await findAlignedShift(probeFd, raw);
  return { buf: raw.subarray(shift, shift + size), memory: raw };
}

/** The smallest shift at which `buf` is aligned for O_DIRECT, found by asking the kernel. */
export async function findAlignedShift(probeFd: number, buf: Buffer): Promise<number> {
  let last: unknown;
  for (let shift = 0; shift < DIRECT_ALIGN; shift += PROBE_STEP) {
    try {
      await fsio.pread(probeFd, buf, shift, DIRECT_ALIGN, 0);
      return shift;
    } catch (e) {
      if (fsio.errno(e) !== 'EINVAL') throw e;
      last = e;
    }
  }
  throw last ?? new Error('no aligned window found');
}
