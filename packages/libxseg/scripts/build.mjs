#!/usr/bin/env node
// Build @archipelago/libxseg: compile the native segment addon with node-gyp, copy it into
// dist/ (so turbo's cached outputs carry it), then `tsc --build`.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = dirname(dirname(fileURLToPath(import.meta.url)));
const require = createRequire(join(pkg, 'package.json'));
const run = (args) => execFileSync(process.execPath, args, { cwd: pkg, stdio: 'inherit' });

const gyp = require.resolve('node-gyp/bin/node-gyp.js');
const args = [gyp, existsSync(join(pkg, 'build', 'config.gypi')) ? 'build' : 'rebuild'];
// Use the installed headers instead of downloading them (offline machines).
const nodedir =
  process.env.npm_config_nodedir ?? (existsSync('/usr/include/node/node_api.h') ? '/usr' : undefined);
if (nodedir) args.push(`--nodedir=${nodedir}`);
if (process.argv.includes('--native-only') || !process.argv.includes('--ts-only')) {
  run(args);
  mkdirSync(join(pkg, 'dist'), { recursive: true });
  copyFileSync(join(pkg, 'build', 'Release', 'xseg.node'), join(pkg, 'dist', 'xseg.node'));
}
if (!process.argv.includes('--native-only')) run([require.resolve('typescript/bin/tsc'), '--build']);
