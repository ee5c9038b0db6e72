#!/usr/bin/env node
// File I/O runs on libuv's pool; the default of 4 threads starves parallel object I/O.
process.env.UV_THREADPOOL_SIZE ??= '16';
const { main } = await import('../dist/bin.js');

main(process.argv.slice(2)).catch((e) => {
  process.stderr.write(`archipelago-gateway: ${e?.message ?? String(e)}\n`);
  process.exit(1);
});
