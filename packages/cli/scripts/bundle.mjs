#!/usr/bin/env node
/**
 * Bundles `vlmc` (every command, oclif, conf and our packages) into one CommonJS module,
 * dist/bundle/vlmc.cjs, after tsc (CommonJS so that bin/vlmc.js can compile it with a V8 code
 * cache, which Node 20 offers for scripts only, not for ES modules). Why: a command's start is paid by every `vlmc` call, and
 * Node spends most of it resolving, reading and compiling hundreds of small modules; one file
 * roughly halves the start-up CPU (numbers in packages/cli/README.md).
 *
 * A second bundle, dist/bundle/fast.cjs, holds the fast dispatch of the hot commands (src/fast/,
 * no oclif): bin/vlmc.js tries it first for `info`, `snapshot` and `create`.
 *
 * The bundle exports COMMANDS (oclif's "explicit" command discovery, see package.json) and
 * main(argv). Kept out of it: packages with native addons or files found next to their own
 * module (they load from node_modules as usual, so this package depends on them), and
 * typescript, which oclif only requires in development mode.
 */
import { mkdirSync, readdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const dist = fileURLToPath(new URL('../dist/', import.meta.url));
// Commands of a topic live in a directory of it: commands/trash/ls.js is `trash:ls` (`vlmc trash ls`).
const commands = readdirSync(`${dist}commands`, { recursive: true })
  .filter((f) => f.endsWith('.js'))
  .map((f) => f.slice(0, -3))
  .sort();
const ident = (path) => `C_${path.replace(/[^A-Za-z0-9]/g, '_')}`;
const id = (path) => path.replaceAll('/', ':');
/**
 * oclif's Config.load found the package's root by walking up from the bundle, reading every
 * package.json on the way, and then read the user plugins' package.json in its data directory:
 * asynchronous reads through libuv's pool, each a round trip of the event loop (~5-10 ms of wall
 * on a loaded machine). main() gives it the root and this package.json (read here, at build
 * time: the build bundles again whenever it changes) and no user plugins (vlmc has no `plugins`
 * command; nothing installs one).
 */
const pjson = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const entry = [
  "import { execute } from '@oclif/core';",
  "import { resolve } from 'node:path';",
  "import { fileURLToPath } from 'node:url';",
  "import { normalizeArgv } from '@archipelago/cli-kit';",
  ...commands.map((path) => `import ${ident(path)} from './commands/${path}.js';`),
  `export const COMMANDS = { ${commands.map((path) => `${JSON.stringify(id(path))}: ${ident(path)}`).join(', ')} };`,
  `const PJSON = ${JSON.stringify(pjson)};`,
  'export function main(args) {',
  "  const root = resolve(fileURLToPath(import.meta.url), '..', '..', '..');",
  '  return execute({ args: normalizeArgv(args), loadOptions: { root, pjson: PJSON, userPlugins: false } });',
  '}',
].join('\n');

/**
 * conf imports ajv and ajv-formats at load time, but compiles nothing unless given a schema, and
 * vlmc gives it none (src/config-validate.generated.ts validates instead). Loading them cost
 * ~25 ms per call; in the bundle they are stand-ins that fail loudly if ever used.
 */
const unusedByConf = {
  name: 'conf-without-ajv',
  setup(b) {
    b.onResolve({ filter: /^ajv(\/dist\/2020\.js)?$|^ajv-formats$/ }, (args) =>
      args.importer.includes('/conf/') ? { path: args.path, namespace: 'unused-by-conf' } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'unused-by-conf' }, (args) => ({
      contents: `const fail = () => { throw new Error(${JSON.stringify(`${args.path} is not bundled: vlmc validates its configuration with generated code`)}); };
export class Ajv2020 { constructor() { fail(); } }
export default fail;`,
      loader: 'js',
    }));
  },
};

/**
 * oclif's config asks wsl-utils whether it runs under WSL (its `platform`: "wsl" or the OS), and
 * loading wsl-utils loads child_process, fs/promises and PowerShell helpers: ~10-15 ms of every
 * call. vlmc uses none of oclif's WSL-dependent features (opening a browser, shell detection); in
 * the bundle, isWsl is the kernel-release test alone (a WSL kernel's release names Microsoft).
 */
const wslStub = {
  name: 'wsl-utils-stub',
  setup(b) {
    b.onResolve({ filter: /^wsl-utils$/ }, (args) => ({ path: args.path, namespace: 'wsl-utils-stub' }));
    b.onLoad({ filter: /.*/, namespace: 'wsl-utils-stub' }, () => ({
      contents: `import { release } from 'node:os';
export const isWsl = process.platform === 'linux' && release().toLowerCase().includes('microsoft');
const fail = () => { throw new Error('wsl-utils is not bundled in vlmc'); };
export const powerShellPath = fail;
export const powerShellPathFromWsl = fail;
export const wslDefaultBrowser = fail;
export const wslDrivesMountPoint = fail;`,
      loader: 'js',
    }));
  },
};

/**
 * oclif's logger loads the debug package at start-up, which loads supports-color, tty and the
 * stream machinery: ~10-20 ms of every call, for output that only DEBUG=... shows. In the bundle,
 * oclif gets debug itself only when DEBUG is set, and silent loggers otherwise.
 */
const debugWhenSet = {
  name: 'debug-when-set',
  setup(b) {
    b.onResolve({ filter: /^debug$/ }, (args) =>
      args.namespace === 'file' && args.importer.includes('/@oclif/core/')
        ? { path: args.resolveDir, namespace: 'debug-when-set' }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'debug-when-set' }, (args) => ({
      contents: `if (process.env.DEBUG) module.exports = require('debug');
else {
  const make = (namespace) => {
    const log = () => {};
    log.enabled = false;
    log.namespace = namespace;
    log.log = () => {};
    log.extend = (sub, delimiter = ':') => make(namespace + delimiter + sub);
    return log;
  };
  make.enable = () => {};
  make.disable = () => '';
  make.enabled = () => false;
  module.exports = make;
}`,
      resolveDir: args.path,
      loader: 'js',
    }));
  },
};

/**
 * `@archipelago/peer` stays outside the bundle (its daemons' addon, loaded only by the daemon
 * wiring), but esbuild's `external` would also keep out its subpaths `/options` and
 * `/privileges`, plain JavaScript every command loads through the runtime's configuration: as
 * ES modules outside the bundle they started Node's ES module loader on every call (~7-15 ms).
 * Only the package's root (and `/main`) stay external here; the subpaths are bundled.
 */
const peerRootOnly = {
  name: 'peer-root-only',
  setup(b) {
    b.onResolve({ filter: /^@archipelago\/peer(\/main)?$/ }, (args) => ({ path: args.path, external: true }));
  },
};

/**
 * `@archipelago/fastio` (a native addon, which every command reading a map uses) finds its addon
 * relative to its own module (import.meta.url). Outside the bundle it was the one ES module a
 * command loaded, and `require()` of an ES module starts Node's ES module loader: ~6-8 ms per call.
 * Its JavaScript is bundled here with its own import.meta.url resolved at run time (the package's
 * real dist/index.js, through the bundle's node_modules), so it still finds its addon there.
 */
const { createRequire } = await import('node:module');
const { readFile } = await import('node:fs/promises');
const { dirname: dirOf } = await import('node:path');
const fastioFile = createRequire(import.meta.url).resolve('@archipelago/fastio');
/**
 * Where the bundle finds that module at run time: in this package's own node_modules (where pnpm
 * links every dependency), as the path below the package's root that it has at build time; else
 * through Node's resolution. Resolving a package's `exports` loaded Node's ES module resolver on
 * every call (~3 ms); the path needs one stat.
 */
const fastioRel = relative(
  realpathSync(fileURLToPath(new URL('../node_modules/@archipelago/fastio/', import.meta.url))),
  realpathSync(fastioFile),
);
const fastioAtRunTime = `(() => { const p = require('node:path').join(__dirname, '..', '..', 'node_modules', '@archipelago', 'fastio', ${JSON.stringify(fastioRel)}); return require('node:fs').existsSync(p) ? p : require('node:module').createRequire(__filename).resolve('@archipelago/fastio'); })()`;
const bundledFastio = {
  name: 'bundled-fastio',
  setup(b) {
    b.onResolve({ filter: /^@archipelago\/fastio$/ }, () => ({ path: fastioFile, namespace: 'fastio' }));
    b.onLoad({ filter: /.*/, namespace: 'fastio' }, async () => {
      const source = await readFile(fastioFile, 'utf8');
      if (!source.includes('import.meta.url'))
        throw new Error(`${fastioFile}: no import.meta.url to resolve`);
      return {
        contents: `const __fastioUrl = require('node:url').pathToFileURL(${fastioAtRunTime}).href;\n${source.replaceAll('import.meta.url', '__fastioUrl')}`,
        resolveDir: dirOf(fastioFile),
        loader: 'js',
      };
    });
  },
};

/**
 * oclif's Plugin.load sorts the command table with String.prototype.localeCompare, and the first
 * localeCompare of a process initializes ICU's collator: ~6 ms of every call, for nothing else in
 * a command's path compares strings by locale. In the bundle that sort compares code units; for
 * vlmc's command ids (lower-case ASCII, '-' and ':') both orders are the same, which the build
 * checks, so the order of the table (and of `vlmc --help`) does not change.
 */
const SORT = '.sort((a, b) => a.id.localeCompare(b.id))';
const commandIds = commands.map(id);
const byLocale = [...commandIds].sort((a, b) => a.localeCompare(b));
const byCodeUnit = [...commandIds].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
if (byLocale.join() !== byCodeUnit.join())
  throw new Error(
    `bundle: command ids sort differently by locale and by code unit: ${byLocale} / ${byCodeUnit}`,
  );
const plainSort = {
  name: 'oclif-plain-command-sort',
  setup(b) {
    b.onLoad({ filter: /@oclif[\\/]core[\\/]lib[\\/]config[\\/]plugin\.js$/ }, async (args) => {
      const source = await readFile(args.path, 'utf8');
      if (!source.includes(SORT))
        throw new Error(`${args.path}: no "${SORT}" to replace (another oclif version?)`);
      return {
        contents: source.replace(SORT, '.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))'),
        loader: 'js',
      };
    });
  },
};

/**
 * Bundled packages that the bundle evaluates at load but that a call rarely uses: pino (the
 * endpoint's logger: `vlmc map` starts the endpoint in a process of its own), tinyglobby (oclif's
 * pattern command discovery; vlmc's is explicit) and semver (oclif's plugin version checks).
 * Evaluating them cost ~3-5 ms per call. Where a module imports one of them, the bundle gives it
 * a module of getters, one per export (read from the package at build time), that evaluates the
 * real package (bundled as before) on first use; a package that is a function (pino) stays
 * callable.
 */
const LAZY_PACKAGES = ['pino', 'tinyglobby', 'semver'];
const lazyPackages = {
  name: 'lazy-packages',
  setup(b) {
    const filter = new RegExp(`^(${LAZY_PACKAGES.join('|')})$`);
    b.onResolve({ filter }, async (args) => {
      if (args.pluginData === 'lazy-real') return undefined;
      const real = await b.resolve(args.path, {
        resolveDir: args.resolveDir,
        kind: args.kind,
        importer: args.importer,
        pluginData: 'lazy-real',
      });
      if (real.errors.length > 0 || real.external) return undefined;
      return { path: real.path, namespace: 'lazy-package' };
    });
    b.onLoad({ filter: /.*/, namespace: 'lazy-package' }, (args) => {
      const real = createRequire(args.path)(args.path);
      const callable = typeof real === 'function';
      const names = Object.getOwnPropertyNames(real).filter(
        (k) => !callable || !['length', 'name', 'prototype', 'arguments', 'caller'].includes(k),
      );
      const path = JSON.stringify(args.path);
      return {
        contents: `let real;
const load = () => (real ??= require(${path}));
${callable ? 'module.exports = function (...args) { return new.target ? new (load())(...args) : load().apply(this, args); };' : ''}
for (const name of ${JSON.stringify(names)})
  Object.defineProperty(module.exports, name, { enumerable: true, configurable: true, get: () => load()[name] });`,
        resolveDir: dirOf(args.path),
        loader: 'js',
      };
    });
  },
};

/**
 * The fast dispatch's bundle (src/fast/main.ts: `info`, `snapshot`, `create --snap` without oclif):
 * @archipelago/cli-kit's index would bring oclif in (its ToolCommand), so here it is the modules of
 * cli-kit that have no oclif in them; the build fails if one is missing, and if oclif still got in.
 */
const cliKitDist = dirOf(createRequire(import.meta.url).resolve('@archipelago/cli-kit'));
const cliKitWithoutOclif = {
  name: 'cli-kit-without-oclif',
  setup(b) {
    b.onResolve({ filter: /^@archipelago\/cli-kit$/ }, () => ({
      path: 'cli-kit',
      namespace: 'cli-kit-lite',
    }));
    b.onLoad({ filter: /.*/, namespace: 'cli-kit-lite' }, () => ({
      contents: ['argv', 'json', 'size']
        .map((m) => `export * from ${JSON.stringify(`${cliKitDist}/${m}.js`)};`)
        .join('\n'),
      resolveDir: cliKitDist,
      loader: 'js',
    }));
  },
};

/** esbuild's options of both bundles. */
const common = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  write: false,
  // The sources are ES modules: their import.meta.url is the bundle's own URL.
  define: { 'import.meta.url': '__vlmcUrl' },
  external: [
    '@archipelago/blocker-rados',
    // (@archipelago/peer: external through peerRootOnly above; @archipelago/fastio is bundled
    // with its own module's URL, see bundledFastio.)
    '@archipelago/libxseg/segment',
    'typescript',
    '*.node',
  ],
  banner: {
    js: "const __vlmcUrl = require('node:url').pathToFileURL(__filename).href;\nconst __vlmcImport = require('./import.cjs');",
  },
  legalComments: 'none',
  logLevel: 'warning',
};

/**
 * bin/vlmc.js compiles the bundle as a vm.Script with a code cache. In Node 20, import() in such a
 * script needs --experimental-vm-modules, and functions read from a code cache lose even the
 * default loader: so the bundle's import() calls (addons, the RADOS blocker, oclif's hooks) go to
 * import.cjs, an ordinary module whose import() is Node's own, resolving from this directory as
 * the bundle's would. esbuild prints code, so an `import(` not right after a quote, a dot or a
 * name character is an import expression ("import()" in a message stays as it is).
 */
function withImport(code) {
  let dynamic = 0;
  const out = code.replace(/(?<![\w$."'`])import\(/g, () => {
    dynamic++;
    return '__vlmcImport(';
  });
  return { code: out, dynamic };
}

const out = `${dist}bundle/vlmc.cjs`;
const result = await build({
  ...common,
  plugins: [unusedByConf, wslStub, debugWhenSet, peerRootOnly, bundledFastio, plainSort, lazyPackages],
  stdin: { contents: entry, resolveDir: dist, sourcefile: 'vlmc-entry.js', loader: 'js' },
  outfile: out,
});
const fastOut = `${dist}bundle/fast.cjs`;
const fast = await build({
  ...common,
  plugins: [cliKitWithoutOclif, unusedByConf, peerRootOnly, bundledFastio, lazyPackages],
  entryPoints: [`${dist}fast/main.js`],
  outfile: fastOut,
  metafile: true,
});
const oclifIn = Object.keys(fast.metafile.inputs).filter((f) => /@oclif[\\/]/.test(f));
if (oclifIn.length > 0) throw new Error(`bundle: oclif got into the fast bundle: ${oclifIn.join(', ')}`);

const main = withImport(result.outputFiles[0].text);
// write: false above, so esbuild made no directory: a fresh clone has none.
mkdirSync(`${dist}bundle`, { recursive: true });
writeFileSync(out, main.code);
writeFileSync(fastOut, withImport(fast.outputFiles[0].text).code);
writeFileSync(
  `${dist}bundle/import.cjs`,
  '// import() for the bundle (see scripts/bundle.mjs)\nmodule.exports = (specifier) => import(specifier);\n',
);
console.log(
  `bundled ${commands.length} commands into dist/bundle/vlmc.cjs (${main.dynamic} import() calls), and info/snapshot/create into dist/bundle/fast.cjs (${(fast.outputFiles[0].text.length / 1024).toFixed(0)} KiB, no oclif)`,
);
