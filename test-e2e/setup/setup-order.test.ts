/**
 * Set-up in any order (issue 13 §1). A new user ran the README's two commands in order: the
 * quickstart built without librados-dev (fine), then the test command installed librados-dev and
 * ran scripts/install.sh again, but pnpm did not rerun the addon's install script and turbo
 * replayed the cached build, so the RADOS addon was never built. Here, on a copy of the checkout
 * (the other test files use the checkout's own addons): the install step with the librados headers
 * hidden (a bind mount of an empty directory over /usr/include/rados in a private mount
 * namespace), then with them visible, then again after every addon's build directory is lost.
 * Each time every addon must exist and load in a fresh `node`, except RADOS without its headers.
 *
 * Kept short: the copy's turbo cache is seeded with the checkout's entries for the same inputs
 * (the TypeScript builds replay, as they did for the user), and pnpm installs from its warm store.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NOT_BUILT_MESSAGE } from '../../packages/blocker-rados/src/native.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const RADOS_INCLUDE = '/usr/include/rados';

function skipReason(): string | undefined {
  if (process.platform !== 'linux') return 'Linux only (mount namespaces)';
  if (process.getuid?.() !== 0) return 'needs root: it hides the librados headers with a bind mount';
  if (spawnSync('unshare', ['-m', 'true']).status !== 0)
    return 'needs `unshare -m` (util-linux, CAP_SYS_ADMIN)';
  if (!existsSync(join(RADOS_INCLUDE, 'librados.h')))
    return `needs the librados headers (${RADOS_INCLUDE}; scripts/test.sh installs librados-dev)`;
  return undefined;
}
const skip = skipReason();
if (skip) console.warn(`setup-order: skipped: ${skip}`);

let copy = '';
let empty = '';

/** The checkout's files as git sees them (tracked and untracked, not ignored), uncommitted edits included. */
function copyCheckout(to: string): void {
  const files = execFileSync('git', ['ls-files', '-z', '-co', '--exclude-standard'], {
    cwd: ROOT,
    encoding: 'utf8',
  })
    .split('\0')
    .filter((f) => f && existsSync(join(ROOT, f)));
  for (const f of files) {
    mkdirSync(dirname(join(to, f)), { recursive: true });
    copyFileSync(join(ROOT, f), join(to, f));
  }
}

/** Copies the checkout's turbo cache entries for the copy's build tasks (same inputs, same hashes). */
function seedTurboCache(to: string): void {
  const common = execFileSync('git', ['rev-parse', '--path-format=absolute', '--git-common-dir'], {
    cwd: ROOT,
    encoding: 'utf8',
  }).trim();
  const cache = join(dirname(common), '.turbo', 'cache'); // turbo's cache, shared by git worktrees
  if (!existsSync(cache)) return;
  const dry = execFileSync(join(ROOT, 'node_modules', '.bin', 'turbo'), ['run', 'build', '--dry=json'], {
    cwd: to,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const hashes = new Set((JSON.parse(dry) as { tasks: Array<{ hash: string }> }).tasks.map((t) => t.hash));
  const into = join(to, '.turbo', 'cache');
  mkdirSync(into, { recursive: true });
  for (const f of readdirSync(cache))
    if (hashes.has(f.slice(0, 16))) copyFileSync(join(cache, f), join(into, f));
}

/** A user's shell: no pnpm/npm run-script variables, no node_modules/.bin of the checkout on PATH. */
function userEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env))
    if (!/^(npm_|pnpm_|PNPM_|TURBO_|VITEST|NODE_OPTIONS$|INIT_CWD$)/i.test(k)) env[k] = v;
  env.PATH = (process.env.PATH ?? '')
    .split(':')
    .filter((p) => !p.includes('node_modules'))
    .join(':');
  env.npm_config_prefer_offline = 'true'; // the store is warm; don't ask the registry
  return env;
}

/** `bash scripts/install.sh` in the copy, with the librados headers hidden or not; its output. */
async function installStep(radosHeaders: 'hidden' | 'visible'): Promise<string> {
  const hide = `mount --bind "$1" ${RADOS_INCLUDE} && exec bash scripts/install.sh`;
  const [cmd, args] =
    radosHeaders === 'hidden'
      ? ['unshare', ['-m', '--', 'sh', '-c', hide, 'sh', empty]]
      : ['bash', ['scripts/install.sh']];
  try {
    const r = await promisify(execFile)(cmd, args, { cwd: copy, env: userEnv(), maxBuffer: 64 << 20 });
    return r.stdout + r.stderr;
  } catch (e) {
    const { stdout, stderr } = e as { stdout?: string; stderr?: string };
    throw new Error(
      `scripts/install.sh (librados headers ${radosHeaders}) failed: ${e}\n${stdout}\n${stderr}`,
    );
  }
}

interface AddonState {
  file: boolean;
  load: string;
}

/** Each addon: is its node-gyp output there, and what a fresh `node` gets loading it the package's way. */
function addons(): Record<'rados' | 'xseg' | 'fastio', AddonState> {
  const pkg = (p: string) => join(copy, 'packages', p);
  const script = `
const out = {};
const load = async (key, f) => { try { out[key] = String(await f()); } catch (e) { out[key] = 'error: ' + e.message; } };
await load('rados', async () => (await import(${JSON.stringify(join(pkg('blocker-rados'), 'dist/native.js'))})).loadBinding().librados.join('.'));
await load('xseg', async () => (await import(${JSON.stringify(join(pkg('libxseg'), 'dist/segment/native.js'))})).loadAddon().VERSION);
await load('fastio', async () => (await import(${JSON.stringify(join(pkg('fastio'), 'dist/index.js'))})).available());
console.log(JSON.stringify(out));`;
  const load = JSON.parse(
    execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: copy, encoding: 'utf8' }),
  ) as Record<string, string>;
  const file = (p: string, name: string) => existsSync(join(pkg(p), 'build', 'Release', `${name}.node`));
  return {
    rados: { file: file('blocker-rados', 'archip_rados'), load: load.rados },
    xseg: { file: file('libxseg', 'xseg'), load: load.xseg },
    fastio: { file: file('fastio', 'fastio'), load: load.fastio },
  };
}

const built = (load: unknown) => ({ file: true, load });
const XSEG_BUILT = built(expect.stringMatching(/^\d+$/)); // the addon's VERSION
const FASTIO_BUILT = built('true'); // available()
const ALL_BUILT = {
  rados: built(expect.stringMatching(/^\d+\.\d+\.\d+$/)), // librados' version
  xseg: XSEG_BUILT,
  fastio: FASTIO_BUILT,
};

describe.skipIf(skip)('set-up in any order: every native addon ends up built', () => {
  beforeAll(() => {
    copy = mkdtempSync('/var/tmp/archip-setup-order-');
    empty = mkdtempSync('/var/tmp/archip-setup-empty-');
    copyCheckout(copy);
    seedTurboCache(copy);
  }, 120_000);

  afterAll(() => {
    if (copy) rmSync(copy, { recursive: true, force: true });
    if (empty) rmSync(empty, { recursive: true, force: true });
  });

  it('the first command without librados-dev: libxseg and fastio built, RADOS "not built"', async () => {
    expect(await installStep('hidden')).toContain('RADOS support is not built');
    expect(addons()).toEqual({
      rados: { file: false, load: `error: ${NOT_BUILT_MESSAGE}` },
      xseg: XSEG_BUILT,
      fastio: FASTIO_BUILT,
    });
  }, 300_000);

  it('then the install step with the headers installed: the RADOS addon is built and loads', async () => {
    expect(await installStep('visible')).not.toContain('RADOS support is not built');
    expect(addons()).toEqual(ALL_BUILT);
  }, 300_000);

  it('after every build directory is lost, the install step builds all three again', async () => {
    for (const p of ['blocker-rados', 'libxseg', 'fastio'])
      rmSync(join(copy, 'packages', p, 'build'), { recursive: true, force: true });
    await installStep('visible');
    expect(addons()).toEqual(ALL_BUILT);
  }, 300_000);
});
