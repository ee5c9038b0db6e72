// The native addon step of the packages with one (libxseg, fastio, blocker-rados: their
// scripts/build.mjs). Not a package: plain ESM, no build.
//
// An addon is a function of what it is built from, and this step checks that on every build:
// `build/<target>.inputs` records a SHA-256 of binding.gyp, the C++ sources, the system headers
// the addon builds against (librados' for blocker-rados), node-addon-api and the Node version,
// written after a successful node-gyp build. The addon is rebuilt when it is missing or that
// digest differs. Turbo runs the step as the uncached `build:native` task before each package's
// `build` (turbo.json), and the addon stays out of turbo's cached outputs (build/ is not one, and
// nothing is copied into dist/), so a replayed build ("FULL TURBO") can neither skip it nor
// restore an addon built against other headers. Whether pnpm reruns a package's install script
// does not matter either. Hence any order of the README's two commands, a re-run of either and a
// lost build/ directory all end with the addon built whenever its headers exist.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, join, relative } from 'node:path';

/** The files below `path` (itself when a file), sorted. */
function filesOf(path) {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path)
    .sort()
    .flatMap((f) => filesOf(join(path, f)));
}

/**
 * The digest of what the addon is built from: `inputs` (files or directories, relative to the
 * package or absolute), node-addon-api's version and the Node version.
 */
export function inputsDigest(pkg, inputs) {
  const require = createRequire(join(pkg, 'package.json'));
  const h = createHash('sha256');
  h.update(`node ${process.version} ${process.platform}-${process.arch}\n`);
  h.update(`node-addon-api ${require('node-addon-api/package.json').version}\n`);
  for (const input of inputs)
    for (const f of filesOf(isAbsolute(input) ? input : join(pkg, input)))
      h.update(`${isAbsolute(input) ? f : relative(pkg, f)}\n`)
        .update(readFileSync(f))
        .update('\n');
  return h.digest('hex');
}

/**
 * Builds `build/Release/<target>.node` with node-gyp unless it is there and was built from the same
 * inputs. Returns true when the addon is there and current, false when node-gyp is missing or the
 * build failed (node-gyp's output says why).
 */
export function ensureAddon({ pkg, target, inputs }) {
  const addon = join(pkg, 'build', 'Release', `${target}.node`);
  const stamp = join(pkg, 'build', `${target}.inputs`);
  // Older builds copied the addon into dist/ for turbo's cache to carry; a copy there could be
  // loaded in place of this one.
  rmSync(join(pkg, 'dist', `${target}.node`), { force: true });
  const digest = inputsDigest(pkg, inputs);
  if (existsSync(addon) && existsSync(stamp) && readFileSync(stamp, 'utf8') === digest) return true;
  let gyp;
  try {
    gyp = createRequire(join(pkg, 'package.json')).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    console.warn(`${target}: node-gyp is not installed; the native addon is not built`);
    return false;
  }
  const args = [gyp, 'rebuild'];
  // Use the installed Node headers instead of downloading them (offline machines).
  if (!process.env.npm_config_nodedir && existsSync('/usr/include/node/node_api.h'))
    args.push('--nodedir=/usr');
  const r = spawnSync(process.execPath, args, { cwd: pkg, stdio: 'inherit' });
  if (r.status !== 0 || !existsSync(addon)) return false;
  writeFileSync(stamp, digest);
  return true;
}

/** `tsc --build` in the package; exits with its status when it fails. */
export function tscBuild(pkg) {
  const tsc = createRequire(join(pkg, 'package.json')).resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '--build'], { cwd: pkg, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
