/**
 * Sizes on the command line.
 *
 * `parseSize` reads what an administrator types after `--size`: a number with an optional binary
 * suffix. A bare number means MiB, as the original `vlmc create -s` did ("size in MB").
 */
import { ArchipelagoError } from '@archipelago/libxseg';

const KiB = 1024;
const MiB = KiB * 1024;
const GiB = MiB * 1024;
const TiB = GiB * 1024;
const PiB = TiB * 1024;

/** Multipliers by lowercased suffix. K, KB and KiB all mean 1024 (sizes are binary throughout). */
const UNITS: Readonly<Record<string, number>> = {
  '': MiB,
  b: 1,
  k: KiB,
  kb: KiB,
  kib: KiB,
  m: MiB,
  mb: MiB,
  mib: MiB,
  g: GiB,
  gb: GiB,
  gib: GiB,
  t: TiB,
  tb: TiB,
  tib: TiB,
  p: PiB,
  pb: PiB,
  pib: PiB,
};

const SIZE_RE = /^(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)$/;

function badSize(text: string, why: string): ArchipelagoError {
  return new ArchipelagoError('EINVAL_SIZE', `invalid size "${text}": ${why}`, { details: { size: text } });
}

/**
 * Parses `10G`, `512M`, `1.5GiB`, `4096B`, `100` (= 100 MiB). Suffixes are binary and
 * case-insensitive: B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB, P/PB/PiB. The result is a positive
 * whole number of bytes; anything else fails with EINVAL_SIZE naming the offending text.
 */
export function parseSize(text: string): number {
  const t = text.trim();
  const m = SIZE_RE.exec(t);
  if (!m) {
    throw badSize(
      text,
      'use a number with an optional suffix B, K, M, G, T or P (binary; a bare number is MiB)',
    );
  }
  const unit = UNITS[m[2]!.toLowerCase()];
  if (unit === undefined) {
    throw badSize(text, `unknown suffix "${m[2]}"; use B, K, M, G, T or P (KiB, MiB... are accepted too)`);
  }
  const bytes = Number(m[1]) * unit;
  if (!Number.isInteger(bytes)) throw badSize(text, 'it is not a whole number of bytes');
  if (bytes <= 0) throw badSize(text, 'a size must be greater than zero');
  if (!Number.isSafeInteger(bytes)) throw badSize(text, 'it is too large');
  return bytes;
}

const UNIT_NAMES: ReadonlyArray<[number, string]> = [
  [PiB, 'PiB'],
  [TiB, 'TiB'],
  [GiB, 'GiB'],
  [MiB, 'MiB'],
  [KiB, 'KiB'],
];

/** `bytes` in its largest whole unit, rounded to two decimals, or null below 1 KiB. */
function inUnit(bytes: number): { value: number; unit: number; name: string } | null {
  const abs = Math.abs(bytes);
  const found = UNIT_NAMES.find(([unit]) => abs >= unit);
  if (!found) return null;
  const [unit, name] = found;
  return { value: Math.round((bytes / unit) * 100) / 100, unit, name };
}

/** `10737418240` → `10 GiB`, `1572864` → `1.5 MiB`, `100` → `100 B` (up to two decimals). */
export function formatSize(bytes: number): string {
  if (!Number.isFinite(bytes)) return String(bytes);
  const u = inUnit(bytes);
  return u ? `${u.value} ${u.name}` : `${bytes} B`;
}

/**
 * A size a user can trust to the byte: `formatSize` when that is exact (`4 KiB`, `1.5 MiB`,
 * `100 B`), otherwise the exact byte count with the rounded size after it
 * (`4097 B, about 4 KiB`). For what the user asked for or will rely on (create, resize, hash);
 * progress and summaries keep the shorter `formatSize`.
 */
export function formatSizeExact(bytes: number): string {
  const u = Number.isFinite(bytes) ? inUnit(bytes) : null;
  if (!u || u.value * u.unit === bytes) return formatSize(bytes);
  return `${bytes} B, about ${u.value} ${u.name}`;
}

/** Bytes per second as `123.4 MiB/s`. */
export function formatRate(bytes: number, seconds: number): string {
  if (seconds <= 0) return '-- MiB/s';
  return `${(bytes / MiB / seconds).toFixed(1)} MiB/s`;
}
