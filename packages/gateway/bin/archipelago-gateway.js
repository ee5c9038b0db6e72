#!/usr/bin/env node
// File I/O runs on libuv's pool; the default of 4 threads starves parallel object I/O. CommonJS
// on purpose (bin/package.json): an ES module entry would fix the pool at 4 threads first.
process.env.UV_THREADPOOL_SIZE ??= '16';
import('../dist/bin.js')
  .then(({ main }) => main(process.argv.slice(2)))
  .catch((e) => {
    process.stderr.write(`archipelago-gateway: ${e?.message ?? String(e)}\n`);
    process.exit(1);
  });
