#!/usr/bin/env node
// Build @archipelago/vhost: the native addon with node-gyp (Linux only), then `tsc --build`, as
// packages/fastio does (scripts/lib/native-addon.mjs rebuilds the addon when its inputs changed).
// Without the addon the package still compiles; `available()` is false and `vlmc map
// --vhost-user` says so.
//
//   node scripts/build.mjs            addon (Linux), then tsc --build
//   node scripts/build.mjs --native   addon only (turbo's `build:native`, pnpm's install script)
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureAddon, tscBuild } from '../../../scripts/lib/native-addon.mjs';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');

if (process.platform !== 'linux') console.log('vhost: not Linux; the vhost-user addon is not built');
else if (!ensureAddon({ pkg, target: 'vhost', inputs: ['binding.gyp', 'native'] }))
  console.warn('vhost: the native addon did not build; vhost-user-blk endpoints are unavailable');
if (!process.argv.includes('--native')) tscBuild(pkg);
