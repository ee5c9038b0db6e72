#!/usr/bin/env node
// File I/O runs on libuv's pool (the gateway's blockers); the default of 4 threads starves
// parallel object I/O. CommonJS on purpose (bin/package.json): an ES module entry would fix the
// pool at 4 threads before it could set UV_THREADPOOL_SIZE.
process.env.UV_THREADPOOL_SIZE ??= '16';
process.env.OCLIF_DISABLE_ENGINE_WARNING ??= '1';
require('./run.js').run(process.argv.slice(2));
