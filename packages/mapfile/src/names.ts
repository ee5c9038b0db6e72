import { ArchipelagoError } from '@archipelago/libxseg';
import { MAX_VOLUME_NAME, UINT64_MAX } from './format.js';

const NAME_CHARS = /^[A-Za-z0-9._-]+$/;
const OBJECT_NAME = /^[A-Za-z0-9._-]{1,123}$/;
const BLOCK_SUFFIX = /_[0-9a-f]{16}$/;

/** Lowercase hex of a u64, zero-padded to 16 digits. */
export function hex16(n: bigint | number): string {
  if (typeof n === 'bigint') {
    if (n < 0n || n > UINT64_MAX) throw new RangeError(`hex16: ${n} is not a u64`);
    return n.toString(16).padStart(16, '0');
  }
  if (typeof n !== 'number') throw new TypeError('hex16: expected a number or a bigint');
  if (!Number.isSafeInteger(n) || n < 0)
    throw new RangeError(`hex16: ${n} is not a non-negative safe integer`);
  return n.toString(16).padStart(16, '0');
}

function badName(name: string, rule: string, message: string): ArchipelagoError {
  return new ArchipelagoError('EINVAL_NAME', `invalid volume name "${name}": ${message}`, {
    details: { name, rule },
  });
}

/**
 * Throws EINVAL_NAME (with the broken rule in the message and in `details.rule`) unless `name` can be
 * a volume name: 1..82 characters of [A-Za-z0-9._-], not "." or "..", not starting with "-", not
 * ending with "_lock" or "_<16 lowercase hex>", not starting with "archip_". These rules keep volume
 * names apart from lock, map-block and data-object names.
 */
export function validateVolumeName(name: string): void {
  if (typeof name !== 'string') throw new TypeError('volume name must be a string');
  if (name.length < 1 || name.length > MAX_VOLUME_NAME) {
    throw badName(name, 'length', `must be 1 to ${MAX_VOLUME_NAME} characters long (got ${name.length})`);
  }
  if (!NAME_CHARS.test(name)) {
    throw badName(name, 'charset', "may contain only letters, digits, '.', '_' and '-'");
  }
  if (name === '.' || name === '..') throw badName(name, 'dot', 'must not be "." or ".."');
  if (name.startsWith('-')) throw badName(name, 'leading-dash', "must not start with '-'");
  if (name.endsWith('_lock')) throw badName(name, 'lock-suffix', 'must not end with "_lock"');
  if (BLOCK_SUFFIX.test(name)) {
    throw badName(name, 'hex-suffix', 'must not end with "_" followed by 16 hex digits');
  }
  if (name.startsWith('archip_')) throw badName(name, 'archip-prefix', 'must not start with "archip_"');
}

/** True when `name` is 1..123 characters of [A-Za-z0-9._-] and not "." or "..". */
export function isValidObjectName(name: string): boolean {
  return typeof name === 'string' && OBJECT_NAME.test(name) && name !== '.' && name !== '..';
}

/** v2 copy-up target: `<volume>_<hex16(epoch)>_<hex16(index)>`. */
export function dataObjectName(volume: string, epoch: bigint, index: number): string {
  return `${volume}_${hex16(epoch)}_${hex16(index)}`;
}
