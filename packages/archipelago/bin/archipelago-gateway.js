#!/usr/bin/env node
// `archipelago-gateway ARGS` is `archipelago gateway ARGS` (see bin/archipelago.js for why CommonJS).
process.env.UV_THREADPOOL_SIZE ??= '16';
process.env.OCLIF_DISABLE_ENGINE_WARNING ??= '1';
require('./run.js').run(['gateway', ...process.argv.slice(2)]);
