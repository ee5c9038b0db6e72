/**
 * JSON output of the tools, in a module of its own (no oclif) so that `vlmc`'s fast dispatch
 * (packages/cli/src/fast/) can print exactly what the oclif commands print.
 */

/** JSON.stringify replacer: bigints (epochs) become numbers when exact, else decimal strings. */
export function jsonReplacer(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') {
    return value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= -BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(value)
      : value.toString();
  }
  return value;
}
