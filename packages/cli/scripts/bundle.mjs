#!/usr/bin/env node
/**
 * Bundles `vlmc` (every command, oclif, conf and our packages) into one ES module,
 * dist/bundle/vlmc.mjs, after tsc. Why: a command's start is paid by every `vlmc` call, and
 * Node spends most of it resolving, reading and compiling hundreds of small modules; one file
 * roughly halves the start-up CPU (numbers in packages/cli/README.md).
 *
 * The bundle exports COMMANDS (oclif's "explicit" command discovery, see package.json) and
 * main(argv). Kept out of it: packages with native addons or files found next to their own
 * module (they load from node_modules as usual, so this package depends on them), and
 * typescript, which oclif only requires in development mode.
 */
import { readdirSync } from 'node:fs';
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
const entry = [
  "import { execute } from '@oclif/core';",
  "import { normalizeArgv } from '@archipelago/cli-kit';",
  ...commands.map((path) => `import ${ident(path)} from './commands/${path}.js';`),
  `export const COMMANDS = { ${commands.map((path) => `${JSON.stringify(id(path))}: ${ident(path)}`).join(', ')} };`,
  'export function main(args) { return execute({ args: normalizeArgv(args), dir: import.meta.url }); }',
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

await build({
  plugins: [unusedByConf],
  stdin: { contents: entry, resolveDir: dist, sourcefile: 'vlmc-entry.js', loader: 'js' },
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  outfile: `${dist}bundle/vlmc.mjs`,
  external: [
    '@archipelago/blocker-rados',
    // Finds its addon next to its own module (bundled, it would look beside the bundle).
    '@archipelago/fastio',
    '@archipelago/libxseg/segment',
    '@archipelago/peer',
    'typescript',
    '*.node',
  ],
  // CommonJS dependencies call require(); give the ES module one.
  banner: {
    js: "import { createRequire as __vlmcRequire } from 'node:module';\nconst require = __vlmcRequire(import.meta.url);",
  },
  legalComments: 'none',
  logLevel: 'warning',
});
console.log(`bundled ${commands.length} commands into dist/bundle/vlmc.mjs`);
