/**
 * An unknown command is an error like any other: one line, a stable code, exit status 1
 * (instead of oclif's default banner and status 2).
 */
import type { Hook } from '@oclif/core';

const hook: Hook<'command_not_found'> = async (opts) => {
  // With a space as topic separator, the words after an unknown command are folded into its id.
  const name = opts.id.split(':')[0] ?? opts.id;
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
