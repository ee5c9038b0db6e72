#!/usr/bin/env node
// Build @archipelago/libxseg: the native segment addon with node-gyp, then `tsc --build`. The
// addon is rebuilt whenever it is missing or anything it is built from changed: binding.gyp,
// native/, Node (scripts/lib/native-addon.mjs says how, and why turbo runs `--native` uncached on
// every build).
//
//   node scripts/build.mjs            addon, then tsc --build
//   node scripts/build.mjs --native   addon only (turbo's `build:native` task)
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureAddon, tscBuild } from '../../../scripts/lib/native-addon.mjs';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');

if (!ensureAddon({ pkg, target: 'xseg', inputs: ['binding.gyp', 'native'] })) process.exit(1);
if (!process.argv.includes('--native')) tscBuild(pkg);
