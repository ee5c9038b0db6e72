#!/usr/bin/env node
// Package build: the native librados binding when the librados headers are installed (Debian
// librados-dev), then the TypeScript. Without the headers nothing native is built and the package
// still installs and compiles; RadosBlocker then says at run time how to get RADOS support.
// The addon is rebuilt whenever it is missing or anything it is built from changed: binding.gyp,
// src/native/, the librados headers, Node (scripts/lib/native-addon.mjs says how, and why turbo
// runs `--native` uncached on every build).
//
//   node scripts/build.mjs             addon (when the headers exist), then tsc --build
//   node scripts/build.mjs --native    addon only (turbo's `build:native` task)
//   node scripts/build.mjs --install   addon only, a failure is a warning (pnpm's install script;
//                                      it also replaces the default `node-gyp rebuild` that pnpm
//                                      would otherwise run for a package with a binding.gyp)
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureAddon, tscBuild } from '../../../scripts/lib/native-addon.mjs';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const header = process.env.RADOS_HEADER ?? '/usr/include/rados/librados.h';
const install = process.argv.includes('--install');

if (!existsSync(header)) {
  console.log(`blocker-rados: ${header} not found; the native binding is not built (install librados-dev)`);
} else if (
  !ensureAddon({ pkg, target: 'archip_rados', inputs: ['binding.gyp', 'src/native', dirname(header)] })
) {
  if (!install) process.exit(1);
  console.warn(
    'blocker-rados: the native binding did not build; RADOS support is unavailable until `pnpm run build`',
  );
}
if (!install && !process.argv.includes('--native')) tscBuild(pkg);
