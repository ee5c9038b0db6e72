/**
 * oclif's `command_not_found` hook for `vlmc`, `archipelago` and `xseg`.
 *
 * With a space as topic separator, oclif folds the words after a command into its id
 * (`vlmc showmapped extra` looks for `showmapped:extra`). When a leading part of the id is a
 * command, that command runs with the rest as arguments, so its own parser reports what is wrong
 * ("Unexpected argument: extra") the way every other usage error is reported. A word that names
 * no command is an error like any other: one line, code EINVAL, exit status 1 (`--json`: the
 * JSON error object), instead of oclif's banner and status 2.
 */
import type { Hook } from '@oclif/core';

const hook: Hook<'command_not_found'> = async (opts) => {
  const parts = opts.id.split(':');
  for (let n = parts.length - 1; n > 0; n--) {
    const id = parts.slice(0, n).join(':');
    if (opts.config.findCommand(id)) {
      return opts.config.runCommand(id, [...parts.slice(n), ...(opts.argv ?? [])]);
    }
  }
  const name = parts[0] ?? opts.id;
  const message = `unknown command "${name}"; run "${opts.config.bin} --help" for the list of commands`;
  process.exitCode = 1;
  if (opts.argv?.includes('--json')) {
    process.stdout.write(
      `${JSON.stringify({ error: { code: 'EINVAL', message, details: { command: name } } }, null, 2)}\n`,
    );
  } else {
    process.stderr.write(`${opts.config.bin}: EINVAL: ${message}\n`);
  }
  return undefined;
};

export default hook;
