#!/usr/bin/env node
// Writes src/config-validate.generated.ts from the built CONFIG_ROOT_SCHEMA (run after tsc).
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CONFIG_ROOT_SCHEMA } from '../dist/config-schema.js';
import { configValidatorSource } from '../dist/config-validator-source.js';

const out = fileURLToPath(new URL('../src/config-validate.generated.ts', import.meta.url));
writeFileSync(out, configValidatorSource(CONFIG_ROOT_SCHEMA));
console.log(`wrote ${out}`);
