/**
 * Command lines as the original tools took them, turned into what oclif parses.
 */

/** Flags that may come before the command word: `-c FILE`, `--config=FILE`, `-cFILE`, `--json`. */
function leadingGlobal(argv: readonly string[]): number {
  const a = argv[0];
  if (a === undefined) return 0;
  if (a === '-c' || a === '--config') return argv.length > 1 ? 2 : 0;
  if (a === '--json' || a.startsWith('--config=') || (a.startsWith('-c') && a.length > 2)) return 1;
  return 0;
}

/**
 * Rewrites a command line for oclif:
 * - the original `vlmc` and `archipelago` took their global options before the command
 *   (`vlmc -c FILE create ...`); oclif wants them after it, so leading `-c/--config` and `--json`
 *   move behind the command word;
 * - `help [COMMAND...]` becomes `[COMMAND...] --help`, and `-h` is a help flag (package.json
 *   `additionalHelpFlags`), as oclif users expect.
 */
export function normalizeArgv(input: readonly string[]): string[] {
  const argv = [...input];
  const lead: string[] = [];
  for (let n = leadingGlobal(argv); n > 0 && argv.length > n; n = leadingGlobal(argv)) {
    lead.push(...argv.splice(0, n));
  }
  if (argv[0] === 'help') {
    argv.shift();
    argv.push('--help');
  }
  if (lead.length > 0 && argv.length > 0 && !argv[0]!.startsWith('-')) argv.splice(1, 0, ...lead);
  else argv.unshift(...lead);
  return argv;
}
