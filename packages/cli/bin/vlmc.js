#!/usr/bin/env node
// File I/O runs on libuv's pool; the default of 4 threads starves parallel object I/O.
process.env.UV_THREADPOOL_SIZE ??= '16';
const { execute } = await import('@oclif/core');
await execute({ dir: import.meta.url });
