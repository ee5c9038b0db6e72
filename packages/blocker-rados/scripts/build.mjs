#!/usr/bin/env node
// Package build: the native librados binding when the librados headers are installed (Debian
// librados-dev), then the TypeScript. Without the headers nothing native is built and the package
// still installs and compiles; RadosBlocker then says at run time how to get RADOS support.
// The addon is rebuilt only when binding.gyp or a file in src/native/ is newer than it.
//
//   node scripts/build.mjs            addon (when headers exist), then tsc --build
//   node scripts/build.mjs --native   addon only, and a failure is a warning (the install script:
//                                     it also replaces the default `node-gyp rebuild` that pnpm
//                                     would otherwise run for a package with a binding.gyp)
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(pkg, 'package.json'));
const header = process.env.RADOS_HEADER ?? '/usr/include/rados/librados.h';
const addon = join(pkg, 'build', 'Release', 'archip_rados.node');

const nativeOnly = process.argv.includes('--native');

function run(cmd, args, soft = false) {
  const r = spawnSync(cmd, args, { cwd: pkg, stdio: 'inherit' });
  if (r.status === 0) return;
  if (soft) {
    console.warn(
      'blocker-rados: the native binding did not build; RADOS support is unavailable until `pnpm run build`',
    );
    process.exit(0);
  }
  process.exit(r.status ?? 1);
}

function upToDate() {
  if (!existsSync(addon)) return false;
  const built = statSync(addon).mtimeMs;
  const native = join(pkg, 'src', 'native');
  const inputs = [join(pkg, 'binding.gyp'), ...readdirSync(native).map((f) => join(native, f))];
  return inputs.every((f) => statSync(f).mtimeMs <= built);
}

if (!existsSync(header)) {
  console.log(`blocker-rados: ${header} not found; the native binding is not built (install librados-dev)`);
} else if (!upToDate()) {
  const args = [require.resolve('node-gyp/bin/node-gyp.js'), 'rebuild'];
  if (!process.env.npm_config_nodedir && existsSync('/usr/include/node/node_api.h'))
    args.push('--nodedir=/usr');
  run(process.execPath, args, nativeOnly);
}
if (!nativeOnly) run(process.execPath, [require.resolve('typescript/bin/tsc'), '--build']);
