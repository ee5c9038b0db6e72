#!/usr/bin/env node
// File I/O runs on libuv's pool; the default of 4 threads starves parallel object I/O. This file
// is CommonJS (bin/package.json) on purpose: an ES module entry is loaded through the pool, which
// then already has its 4 threads, and setting the variable here would change nothing.
process.env.UV_THREADPOOL_SIZE ??= '16';
// package.json's engines already say Node >= 20; oclif's own check costs a semver load per call.
process.env.OCLIF_DISABLE_ENGINE_WARNING ??= '1';

// The original vlmc took its global options before the command (`vlmc -c FILE create ...`);
// oclif wants them after it, so move leading -c/--config and --json behind the command word.
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

// Every command and its dependencies are one bundled module (scripts/bundle.mjs).
import('../dist/bundle/vlmc.mjs').then(({ main }) => main(argv));
