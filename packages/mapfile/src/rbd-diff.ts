/**
 * The RBD diff v1 stream format (Ceph's doc/dev/rbd-diff.rst), what `rbd export-diff` writes and
 * `rbd import-diff` reads: the header "rbd diff v1\n", then metadata records ('f' from-snapshot
 * name, 't' to-snapshot name, 's' image size: a u8 tag, then a le32 length and the name, or a le64),
 * then data records ('w' offset, length, data; 'z' offset, length: a u8 tag and le64s), then the
 * end record 'e'. `RbdDiffWriter` encodes one; `decodeRbdDiff` decodes one strictly: a wrong
 * header, an unknown tag, a record out of place or repeated, an extent past the image size, a
 * stream cut short or going on after its end record are errors (EINVAL) naming the byte offset.
 */
import { archipError } from '@archipelago/libxseg';

/** The first bytes of an RBD diff v1 stream. */
export const RBD_DIFF_V1_HEADER = 'rbd diff v1\n';
const HEADER = Buffer.from(RBD_DIFF_V1_HEADER, 'latin1');
const V2_HEADER = Buffer.from('rbd diff v2\n', 'latin1');
/** The longest snapshot name a stream may carry (what `rbd import-diff` accepts). */
export const RBD_DIFF_MAX_NAME = 4096;

const TAG = { from: 0x66, to: 0x74, size: 0x73, write: 0x77, zero: 0x7a, end: 0x65 } as const; // f t s w z e

/** One decoded record; `at` is the byte offset of its tag in the stream. */
export type RbdDiffRecord =
  | { type: 'from'; name: string; at: number }
  | { type: 'to'; name: string; at: number }
  | { type: 'size'; size: number; at: number }
  /**
   * Data of a 'w' record, in pieces of at most `maxPiece` bytes: `offset` and `data` are the
   * piece's (consecutive pieces of one record share `at`).
   */
  | { type: 'write'; offset: number; data: Buffer; at: number }
  | { type: 'zero'; offset: number; length: number; at: number }
  | { type: 'end'; at: number };

function bad(at: number, message: string): Error {
  return archipError('EINVAL', `RBD diff stream: ${message}`, { details: { offset: at } });
}

function u64(b: Buffer, o: number, at: number, what: string): number {
  const v = b.readBigUInt64LE(o);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(at, `${what} ${v} at byte ${at} is too large`);
  return Number(v);
}

/** Encodes an RBD diff v1 stream, record by record, keeping the format's order rules. */
export class RbdDiffWriter {
  private state: 'start' | 'meta' | 'data' | 'ended' = 'start';
  private size: number | null = null;

  private begin(data: boolean): Buffer[] {
    if (this.state === 'ended') throw new TypeError('RbdDiffWriter: the stream has ended');
    if (!data && this.state === 'data') throw new TypeError('RbdDiffWriter: metadata after data records');
    const out = this.state === 'start' ? [HEADER] : [];
    this.state = data ? 'data' : 'meta';
    return out;
  }

  private name(tag: number, name: string): Buffer {
    const n = Buffer.from(name, 'utf8');
    if (n.length > RBD_DIFF_MAX_NAME)
      throw new RangeError(`snapshot name longer than ${RBD_DIFF_MAX_NAME} bytes`);
    const b = Buffer.alloc(5 + n.length);
    b[0] = tag;
    b.writeUInt32LE(n.length, 1);
    n.copy(b, 5);
    return Buffer.concat([...this.begin(false), b]);
  }

  /** The 'f' record: the snapshot the diff starts from. */
  from(name: string): Buffer {
    return this.name(TAG.from, name);
  }

  /** The 't' record: the snapshot the diff leads to (left out for an image's head). */
  to(name: string): Buffer {
    return this.name(TAG.to, name);
  }

  /** The 's' record: the image size at the end of the diff. */
  imageSize(size: number): Buffer {
    const b = Buffer.alloc(9);
    b[0] = TAG.size;
    b.writeBigUInt64LE(BigInt(size), 1);
    this.size = size;
    return Buffer.concat([...this.begin(false), b]);
  }

  private extent(tag: number, offset: number, length: number): Buffer {
    if (this.size !== null && offset + length > this.size)
      throw new RangeError(`extent ${offset}+${length} past the image size ${this.size}`);
    const b = Buffer.alloc(17);
    b[0] = tag;
    b.writeBigUInt64LE(BigInt(offset), 1);
    b.writeBigUInt64LE(BigInt(length), 9);
    return Buffer.concat([...this.begin(true), b]);
  }

  /** The head of a 'w' record; the caller writes `length` bytes of data after it. */
  write(offset: number, length: number): Buffer {
    return this.extent(TAG.write, offset, length);
  }

  /** A 'z' record: `length` bytes at `offset` read as zeros. */
  zero(offset: number, length: number): Buffer {
    return this.extent(TAG.zero, offset, length);
  }

  /** The 'e' record (and the header, for a stream with no other record). */
  end(): Buffer {
    const out = this.begin(true);
    this.state = 'ended';
    return Buffer.concat([...out, Buffer.from([TAG.end])]);
  }
}

/** Takes exact byte counts from an async byte stream, counting the offset. */
class ByteReader {
  private readonly it: AsyncIterator<Uint8Array>;
  private chunks: Buffer[] = [];
  private have = 0;
  private ended = false;
  /** Offset of the next byte `take` returns. */
  pos = 0;

  constructor(input: AsyncIterable<Uint8Array>) {
    this.it = input[Symbol.asyncIterator]();
  }

  /** Offset just past the last byte the stream holds (known once it ended). */
  get end(): number {
    return this.pos + this.have;
  }

  private async more(): Promise<boolean> {
    while (!this.ended) {
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        break;
      }
      if (r.value.byteLength === 0) continue;
      this.chunks.push(Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength));
      this.have += r.value.byteLength;
      return true;
    }
    return false;
  }

  /** The next `n` bytes, or null when the stream ends before them. */
  async take(n: number): Promise<Buffer | null> {
    while (this.have < n) if (!(await this.more())) return null;
    const first = this.chunks[0];
    let out: Buffer;
    if (n === 0) out = Buffer.alloc(0);
    else if (first!.length >= n) {
      out = first!.subarray(0, n);
      if (first!.length === n) this.chunks.shift();
      else this.chunks[0] = first!.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      for (let k = 0; k < n; ) {
        const c = this.chunks[0]!;
        const m = Math.min(c.length, n - k);
        c.copy(out, k, 0, m);
        k += m;
        if (m === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(m);
      }
    }
    this.have -= n;
    this.pos += n;
    return out;
  }

  async atEnd(): Promise<boolean> {
    return this.have === 0 && !(await this.more());
  }
}

export interface DecodeRbdDiffOptions {
  /** Largest data piece of a 'w' record yielded at once (default 4 MiB). */
  maxPiece?: number;
}

const NAME_DECODER = new TextDecoder('utf-8', { fatal: true });

/**
 * Decodes an RBD diff v1 stream into its records, in order, checking it as it goes (see the
 * module comment); the last record yielded is `end`, and only once the input has ended right
 * after it. A consumer that must not act on a bad stream reads it whole first.
 */
export async function* decodeRbdDiff(
  input: AsyncIterable<Uint8Array>,
  opts: DecodeRbdDiffOptions = {},
): AsyncGenerator<RbdDiffRecord> {
  const maxPiece = Math.max(1, opts.maxPiece ?? 4 * 1024 * 1024);
  const r = new ByteReader(input);
  const need = async (n: number, at: number, what: string): Promise<Buffer> => {
    const b = await r.take(n);
    if (b === null)
      throw bad(r.end, `truncated: the stream ends at byte ${r.end}, inside ${what} at byte ${at}`);
    return b;
  };
  const head = await r.take(HEADER.length);
  if (head === null || !head.equals(HEADER)) {
    const got = head ?? (await r.take(r.end - r.pos)) ?? Buffer.alloc(0);
    if (got.equals(V2_HEADER))
      throw bad(
        0,
        'an RBD diff v2 stream (header at byte 0); only v1 is supported (rbd export-diff writes v1)',
      );
    const cut = head === null && HEADER.subarray(0, got.length).equals(got);
    throw bad(
      cut ? got.length : 0,
      cut
        ? `truncated: the stream ends at byte ${got.length}, inside the header`
        : `not an RBD diff v1 stream: the header at byte 0 is ${JSON.stringify(got.toString('latin1'))}, not "rbd diff v1\\n"`,
    );
  }
  let inData = false;
  const seen = new Set<number>();
  let size: number | null = null;
  for (;;) {
    const at = r.pos;
    const t = await r.take(1);
    if (t === null) throw bad(at, `truncated: the stream ends at byte ${at} without its end record ('e')`);
    const tag = t[0]!;
    const label = `record '${String.fromCharCode(tag)}'`;
    switch (tag) {
      case TAG.from:
      case TAG.to:
      case TAG.size: {
        if (inData) throw bad(at, `metadata ${label} at byte ${at} after data records`);
        if (seen.has(tag)) throw bad(at, `a second ${label} at byte ${at}`);
        seen.add(tag);
        if (tag === TAG.size) {
          size = u64(await need(8, at, label), 0, at + 1, 'image size');
          yield { type: 'size', size, at };
          break;
        }
        const len = (await need(4, at, label)).readUInt32LE(0);
        if (len > RBD_DIFF_MAX_NAME)
          throw bad(
            at,
            `the snapshot name of ${label} at byte ${at} is ${len} bytes long (at most ${RBD_DIFF_MAX_NAME})`,
          );
        let name: string;
        try {
          name = NAME_DECODER.decode(await need(len, at, label));
        } catch (e) {
          if (e instanceof TypeError)
            throw bad(at, `the snapshot name of ${label} at byte ${at} is not UTF-8`);
          throw e;
        }
        yield tag === TAG.from ? { type: 'from', name, at } : { type: 'to', name, at };
        break;
      }
      case TAG.write:
      case TAG.zero: {
        inData = true;
        const b = await need(16, at, label);
        const offset = u64(b, 0, at + 1, 'offset');
        const length = u64(b, 8, at + 9, 'length');
        if (offset + length > Number.MAX_SAFE_INTEGER || (size !== null && offset + length > size)) {
          throw bad(
            at,
            `${label} at byte ${at} covers ${offset}+${length}, past the image size ${size ?? 'limit'}`,
          );
        }
        if (tag === TAG.zero) {
          yield { type: 'zero', offset, length, at };
          break;
        }
        for (let done = 0; done < length; ) {
          const data = await need(
            Math.min(maxPiece, length - done),
            at,
            `the ${length} data bytes of ${label}`,
          );
          yield { type: 'write', offset: offset + done, data, at };
          done += data.length;
        }
        break;
      }
      case TAG.end:
        if (!(await r.atEnd()))
          throw bad(r.pos, `data after the end record: byte ${r.pos} follows the 'e' at byte ${at}`);
        yield { type: 'end', at };
        return;
      default:
        throw bad(
          at,
          `unknown record tag 0x${tag.toString(16).padStart(2, '0')} at byte ${at} (expected one of f t s w z e)`,
        );
    }
  }
}
