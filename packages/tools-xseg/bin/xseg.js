#!/usr/bin/env node
const [{ execute }, { normalizeArgv }] = await Promise.all([
  import('@oclif/core'),
  import('@archipelago/cli-kit'),
]);

// The original tool takes the segment spec first (`xseg posix:archipelago: reportall`); oclif
// wants the command word first, so move the spec behind it. `--json` may come anywhere.
const COMMANDS = new Set(['create', 'destroy', 'reportall', 'report', 'recoverport', 'recoverlocks']);
const argv = normalizeArgv(process.argv.slice(2));
const at = argv.findIndex((a) => !a.startsWith('-'));
if (at !== -1 && !COMMANDS.has(argv[at]) && argv[at + 1] !== undefined && COMMANDS.has(argv[at + 1])) {
  const [spec] = argv.splice(at, 1);
  argv.splice(at + 1, 0, spec);
}

await execute({ args: argv, dir: import.meta.url });
