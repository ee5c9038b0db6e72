#!/usr/bin/env node
// File I/O runs on libuv's pool; the default of 4 threads starves parallel object I/O. This file
// is CommonJS (bin/package.json) on purpose: an ES module entry is loaded through the pool, which
// then already has its 4 threads, and setting the variable here would change nothing.
// Commands that move no data in bulk keep libuv's 4 threads: starting 16 costs ~10 ms of CPU.
const LIGHT = new Set(
  'info snapshot create list ls rename lock unlock showmapped children snapshots unmap'.split(' '),
);
/** The command word of `args`: the first argument that is not an option (nor `-c`'s value). */
function commandOf(args) {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '-c' || args[i] === '--config') i++;
    else if (!args[i].startsWith('-')) return args[i];
  }
  return undefined;
}
if (!LIGHT.has(commandOf(process.argv.slice(2)))) process.env.UV_THREADPOOL_SIZE ??= '16';
// package.json's engines already say Node >= 20; oclif's own check costs a semver load per call.
process.env.OCLIF_DISABLE_ENGINE_WARNING ??= '1';

// Every command and its dependencies are one bundled CommonJS module (scripts/bundle.mjs); its
// main() takes the command line as the original vlmc did (see normalizeArgv in
// @archipelago/cli-kit). The hot commands (info, snapshot, create, map, unmap, showmapped) are first offered to a second,
// smaller bundle without oclif (dist/bundle/fast.cjs, src/fast/main.ts), whose main() runs the
// exact forms it knows and returns undefined for anything else (help, other flags...), which then
// goes to oclif as before. ARCHIPELAGO_CLI_FAST=0 sends everything to oclif.
// Each bundle is compiled here with a V8 code cache kept next to it (vlmc.cjs.cache,
// fast.cjs.cache): parsing and compiling 1.4 MB of JavaScript was about half of a call's CPU.
// A cache is written by the first call that finds it missing or stale (another build of the
// bundle by its stamp below, or another V8, which rejects it), through a temporary file and a
// rename; where the directory is not writable, calls go on without it. ARCHIPELAGO_CODE_CACHE=0
// turns it off.
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const Module = require('node:module');

const useCache = process.env.ARCHIPELAGO_CODE_CACHE !== '0';

/** Loads the bundle dist/bundle/NAME (with its code cache) and returns its exports. */
function load(name) {
  const file = path.join(__dirname, '..', 'dist', 'bundle', name);
  const cacheFile = `${file}.cache`;
  // V8 checks a code cache against the source's length only: a rebuild of the same length (an
  // upgrade, imports reordered) would run stale code. The cache starts with the bundle's size and
  // mtime, one line, and a cache of another build is ignored (and rewritten).
  const st = fs.statSync(file);
  const stamp = Buffer.from(`${st.size} ${st.mtimeMs}\n`);
  let cachedData;
  if (useCache) {
    try {
      const got = fs.readFileSync(cacheFile);
      if (got.subarray(0, stamp.length).equals(stamp)) cachedData = got.subarray(stamp.length);
    } catch {
      // none yet
    }
  }
  // import() in the bundle goes through dist/bundle/import.cjs (see scripts/bundle.mjs).
  const script = new vm.Script(Module.wrap(fs.readFileSync(file, 'utf8')), { filename: file, cachedData });
  const bundle = new Module(file, module);
  bundle.filename = file;
  bundle.paths = Module._nodeModulePaths(path.dirname(file));
  // oclif loads the commands from this same file (package.json, oclif.commands.target): it finds it here.
  Module._cache[file] = bundle;
  script.runInThisContext()(bundle.exports, (id) => bundle.require(id), bundle, file, path.dirname(file));
  bundle.loaded = true;

  if (useCache && (cachedData === undefined || script.cachedDataRejected)) {
    // After the command ran: the cache then holds the functions it compiled too.
    process.once('beforeExit', () => {
      const tmp = `${cacheFile}.${process.pid}`;
      try {
        fs.writeFileSync(tmp, Buffer.concat([stamp, script.createCachedData()]));
        fs.renameSync(tmp, cacheFile);
      } catch {
        fs.rmSync(tmp, { force: true });
      }
    });
  }
  return bundle.exports;
}

const args = process.argv.slice(2);
const FAST = new Set(['info', 'snapshot', 'create', 'map', 'unmap', 'showmapped']);
const fast =
  process.env.ARCHIPELAGO_CLI_FAST !== '0' && FAST.has(commandOf(args))
    ? load('fast.cjs').main(args)
    : undefined;
if (fast === undefined) load('vlmc.cjs').main(args);
