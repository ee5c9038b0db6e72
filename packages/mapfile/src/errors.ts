import { ArchipelagoError } from '@archipelago/libxseg';

/** Stable identifiers of each map corruption kind, carried in `err.details.fault`. */
export type CorruptMapFault =
  | 'no-signature'
  | 'bad-signature'
  | 'bad-version'
  | 'bad-blocksize'
  | 'bad-size'
  | 'truncated-header'
  | 'bad-objectlen'
  | 'truncated-map-block'
  | 'truncated-entry'
  | 'entry-count-mismatch'
  /** A SPARSE map's header changed while its blocks were read (some found absent). */
  | 'map-changed';

/** Builds an ECORRUPT_MAP error whose message names the volume and the fault. */
export function corruptMap(
  volume: string,
  fault: CorruptMapFault,
  what: string,
  details: Record<string, unknown> = {},
): ArchipelagoError {
  return new ArchipelagoError('ECORRUPT_MAP', `corrupt map of volume "${volume}": ${what}`, {
    details: { volume, fault, ...details },
  });
}
