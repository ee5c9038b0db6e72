#!/usr/bin/env node
// Build @archipelago/fastio: the native addon with node-gyp (Linux only), then `tsc --build`. The
// addon is optional: when it does not build (no compiler, no Node headers, not Linux) the package
// still installs and compiles, and src/index.ts reports `available: false` so callers keep their
// plain fs paths. The addon is rebuilt whenever it is missing or anything it is built from
// changed: binding.gyp, native/, Node (scripts/lib/native-addon.mjs says how, and why turbo runs
// `--native` uncached on every build).
//
//   node scripts/build.mjs            addon (Linux), then tsc --build
//   node scripts/build.mjs --native   addon only (turbo's `build:native` task, and pnpm's install
//                                     script: it also replaces the default `node-gyp rebuild`
//                                     that pnpm would otherwise run for a package with a binding.gyp)
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureAddon, tscBuild } from '../../../scripts/lib/native-addon.mjs';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');

if (process.platform !== 'linux')
  console.log('fastio: not Linux; the native addon is not built (plain fs paths are used)');
else if (!ensureAddon({ pkg, target: 'fastio', inputs: ['binding.gyp', 'native'] }))
  console.warn('fastio: the native addon did not build; reads use the thread pool only');
if (!process.argv.includes('--native')) tscBuild(pkg);
