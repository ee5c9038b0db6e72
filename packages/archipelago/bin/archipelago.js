#!/usr/bin/env node
const { execute } = await import('@oclif/core');

// The original took `-c FILE` before the command (`archipelago -c FILE start`); oclif wants it
// after the command word, so move leading -c/--config and --json behind it.
const argv = process.argv.slice(2);
const lead = [];
while (argv.length > 1) {
  const a = argv[0];
  if (a === '-c' || a === '--config') lead.push(...argv.splice(0, 2));
  else if (a === '--json' || a.startsWith('--config=') || (a.startsWith('-c') && a.length > 2))
    lead.push(argv.shift());
  else break;
}
if (lead.length > 0 && argv.length > 0 && !argv[0].startsWith('-')) argv.splice(1, 0, ...lead);
else argv.unshift(...lead);

await execute({ args: argv, dir: import.meta.url });
