#!/usr/bin/env node
// File I/O runs on libuv's pool; the default of 4 threads starves parallel object I/O. This file
// is CommonJS (bin/package.json) on purpose: an ES module entry is loaded through the pool, which
// then already has its 4 threads, and setting the variable here would change nothing.
process.env.UV_THREADPOOL_SIZE ??= '16';
// package.json's engines already say Node >= 20; oclif's own check costs a semver load per call.
process.env.OCLIF_DISABLE_ENGINE_WARNING ??= '1';

// Every command and its dependencies are one bundled module (scripts/bundle.mjs); its main()
// takes the command line as the original vlmc did (see normalizeArgv in @archipelago/cli-kit).
import('../dist/bundle/vlmc.mjs').then(({ main }) => main(process.argv.slice(2)));
