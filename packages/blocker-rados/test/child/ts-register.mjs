// `node --conditions=source --import ./ts-register.mjs child.ts`: runs a TypeScript child process
// against the workspace sources, as vitest does (each .ts transformed by esbuild on load).
import { register } from 'node:module';

register('./ts-hooks.mjs', import.meta.url);
