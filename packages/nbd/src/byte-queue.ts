/**
 * A FIFO of received socket chunks that hands out exact byte counts.
 *
 * Chunks are kept as a list and consumed precisely: `take(n)` returns a zero-copy slice when the
 * bytes lie inside one chunk, and copies exactly once otherwise. Nothing concatenates the stream.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  /** Index of the first live chunk in `chunks`. */
  private first = 0;
  /** Read position inside `chunks[first]`. */
  private pos = 0;
  /** Bytes available. */
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Removes and returns exactly `n` bytes; the caller checks `length >= n` first. */
  take(n: number): Buffer {
    if (n > this.length) throw new RangeError(`ByteQueue.take(${n}) with ${this.length} bytes queued`);
    if (n === 0) return Buffer.alloc(0);
    const head = this.chunks[this.first]!;
    const avail = head.length - this.pos;
    if (avail >= n) {
      const out = head.subarray(this.pos, this.pos + n);
      this.advance(n);
      return out;
    }
    return this.takeInto(Buffer.allocUnsafe(n));
  }

  /** True when the next `n` bytes lie inside the head chunk (`take(n)` would not copy). */
  headHolds(n: number): boolean {
    const head = this.chunks[this.first];
    return head !== undefined && head.length - this.pos >= n;
  }

  /** Removes exactly `target.length` bytes into `target` (one copy); returns `target`. */
  takeInto(target: Buffer): Buffer {
    const n = target.length;
    if (n > this.length) throw new RangeError(`ByteQueue.takeInto(${n}) with ${this.length} bytes queued`);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[this.first]!;
      const m = Math.min(c.length - this.pos, n - filled);
      c.copy(target, filled, this.pos, this.pos + m);
      filled += m;
      this.advance(m);
    }
    return target;
  }

  /** Drops up to `n` bytes and returns how many were dropped. */
  skip(n: number): number {
    let left = Math.min(n, this.length);
    const dropped = left;
    while (left > 0) {
      const c = this.chunks[this.first]!;
      const m = Math.min(c.length - this.pos, left);
      this.advance(m);
      left -= m;
    }
    return dropped;
  }

  clear(): void {
    this.chunks = [];
    this.first = 0;
    this.pos = 0;
    this.length = 0;
  }

  /** Consumes `m` bytes of the head chunk (m <= bytes left in it). */
  private advance(m: number): void {
    this.pos += m;
    this.length -= m;
    const head = this.chunks[this.first]!;
    if (this.pos === head.length) {
      this.chunks[this.first] = EMPTY;
      this.first++;
      this.pos = 0;
      if (this.first === this.chunks.length) {
        this.chunks.length = 0;
        this.first = 0;
      } else if (this.first >= 64 && this.first * 2 >= this.chunks.length) {
        this.chunks = this.chunks.slice(this.first);
        this.first = 0;
      }
    }
  }
}

const EMPTY = Buffer.alloc(0);
