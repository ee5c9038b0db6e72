#!/usr/bin/env node
// Build @archipelago/fastio: the native addon with node-gyp (Linux only), copied into dist/ so
// turbo's cached outputs carry it, then `tsc --build`. The addon is optional: when it does not
// build (no compiler, no Node headers, not Linux) the package still installs and compiles, and
// src/index.ts reports `available: false` so callers keep their plain fs paths.
// The addon is rebuilt only when binding.gyp or a file in native/ is newer than it.
//
//   node scripts/build.mjs            addon (Linux), then tsc --build
//   node scripts/build.mjs --native   addon only, and a failure is a warning (the install script:
//                                     it also replaces the default `node-gyp rebuild` that pnpm
//                                     would otherwise run for a package with a binding.gyp)
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(pkg, 'package.json'));
const addon = join(pkg, 'build', 'Release', 'fastio.node');
const nativeOnly = process.argv.includes('--native');

function upToDate() {
  if (!existsSync(addon)) return false;
  const built = statSync(addon).mtimeMs;
  const native = join(pkg, 'native');
  const inputs = [join(pkg, 'binding.gyp'), ...readdirSync(native).map((f) => join(native, f))];
  return inputs.every((f) => statSync(f).mtimeMs <= built);
}

function buildNative() {
  if (process.platform !== 'linux') {
    console.log('fastio: not Linux; the native addon is not built (plain fs paths are used)');
    return;
  }
  if (!upToDate()) {
    let gyp;
    try {
      gyp = require.resolve('node-gyp/bin/node-gyp.js');
    } catch {
      console.warn('fastio: node-gyp is not installed; the native addon is not built');
      return;
    }
    const args = [gyp, 'rebuild'];
    // Use the installed headers instead of downloading them (offline machines).
    if (!process.env.npm_config_nodedir && existsSync('/usr/include/node/node_api.h'))
      args.push('--nodedir=/usr');
    const r = spawnSync(process.execPath, args, { cwd: pkg, stdio: 'inherit' });
    if (r.status !== 0) {
      console.warn('fastio: the native addon did not build; reads use the thread pool only');
      return;
    }
  }
  mkdirSync(join(pkg, 'dist'), { recursive: true });
  copyFileSync(addon, join(pkg, 'dist', 'fastio.node'));
}

buildNative();
if (!nativeOnly) {
  const r = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '--build'], {
    cwd: pkg,
    stdio: 'inherit',
  });
  process.exit(r.status ?? 1);
}
