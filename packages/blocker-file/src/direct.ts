/**
 * Aligned bounce buffers for O_DIRECT.
 *
 * O_DIRECT needs the file offset, the length AND the memory address aligned (to the device's
 * logical block size and DMA alignment, 512 or 4096 bytes). JavaScript cannot see a Buffer's
 * address, and `Buffer.alloc` memory is only malloc-aligned (16 bytes), so we find an aligned
 * window by asking the kernel: allocate a slab 4 KiB larger than needed and issue O_DIRECT reads of
 * one 4 KiB block from a probe file at successive 8-byte shifts; the first shift the kernel
 * accepts (no EINVAL) is aligned. The slab is then cut into fixed-size chunks that all start at
 * that shift plus a multiple of 4 KiB, so every chunk stays aligned. Slabs are never freed while
 * the pool lives (the backing store of a large ArrayBuffer never moves).
 */
import * as fsio from './fsio.js';

/** Alignment of offsets, lengths and buffers used for O_DIRECT: safe for 512 B and 4 KiB devices. */
export const DIRECT_ALIGN = 4096;
/** Size of one bounce buffer; larger I/Os go through it in several steps. */
export const CHUNK_SIZE = 1 << 20;
/** Chunks per slab (one probe per slab). */
const CHUNKS_PER_SLAB = 4;
/** The step between probed shifts: 8 bytes, the least alignment any allocator gives. */
const PROBE_STEP = 8;

export class AlignedPool {
  private readonly free: Buffer[] = [];
  private readonly waiting: Array<(b: Buffer) => void> = [];
  private growing: Promise<void> | null = null;
  private total = 0;

  /**
   * @param probeFd an fd opened with O_DIRECT on a file of at least DIRECT_ALIGN bytes.
   * @param maxChunks the pool never holds more chunks than this; further takers wait for a put.
   */
  constructor(
    private readonly probeFd: number,
    readonly maxChunks = 64,
  ) {}

  /** An aligned CHUNK_SIZE buffer; give it back with `put`. Rejects when no aligned shift exists. */
  async take(): Promise<Buffer> {
    for (;;) {
      const b = this.free.pop();
      if (b) return b;
      if (this.total >= this.maxChunks && !this.growing) {
        return new Promise<Buffer>((resolve) => this.waiting.push(resolve));
      }
      if (!this.growing) {
        this.growing = this.grow().finally(() => {
          this.growing = null;
        });
      }
      await this.growing;
    }
  }

  put(b: Buffer): void {
    const next = this.waiting.shift();
    if (next) next(b);
    else this.free.push(b);
  }

  private async grow(): Promise<void> {
    const slab = Buffer.alloc(CHUNKS_PER_SLAB * CHUNK_SIZE + DIRECT_ALIGN);
    const shift = await findAlignedShift(this.probeFd, slab);
    for (let i = 0; i < CHUNKS_PER_SLAB; i++) {
      const start = shift + i * CHUNK_SIZE;
      this.free.push(slab.subarray(start, start + CHUNK_SIZE));
    }
    this.total += CHUNKS_PER_SLAB;
  }
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
