/**
 * HTTP Range requests (RFC 9110 §14): `bytes=a-b`, `bytes=a-`, `bytes=-n`, comma-separated.
 */

export interface ByteRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte, inclusive. */
  end: number;
}

/** At most this many ranges in one request (more is a denial-of-service vector). */
export const MAX_RANGES = 64;

/**
 * Parses a Range header against a representation of `size` bytes.
 * - `null`: no usable Range header (absent, another unit, or malformed): serve the whole body;
 * - `'unsatisfiable'`: well formed but no range overlaps the body (416);
 * - otherwise the satisfiable ranges, clamped to the body, in request order.
 */
export function parseRange(header: string | undefined, size: number): ByteRange[] | 'unsatisfiable' | null {
  if (header === undefined) return null;
  const m = /^\s*bytes\s*=\s*(.+)$/i.exec(header);
  if (!m) return null;
  const specs = m[1]!
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (specs.length === 0 || specs.length > MAX_RANGES) return null;
  const out: ByteRange[] = [];
  for (const spec of specs) {
    const r = /^(\d*)\s*-\s*(\d*)$/.exec(spec);
    if (!r || (r[1] === '' && r[2] === '')) return null;
    if (r[1] === '') {
      // Suffix: the last n bytes.
      const n = Number(r[2]);
      if (!Number.isSafeInteger(n)) return null;
      if (n === 0 || size === 0) continue;
      out.push({ start: Math.max(0, size - n), end: size - 1 });
      continue;
    }
    const start = Number(r[1]);
    const end = r[2] === '' ? Number.POSITIVE_INFINITY : Number(r[2]);
    if (!Number.isSafeInteger(start) || (r[2] !== '' && !Number.isSafeInteger(end))) return null;
    if (end < start) return null;
    if (start >= size) continue;
    out.push({ start, end: Math.min(end, size - 1) });
  }
  return out.length === 0 ? 'unsatisfiable' : out;
}
