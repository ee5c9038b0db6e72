import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CONFIG_ROOT_SCHEMA } from './config-schema.js';
import { validate } from './config-validate.generated.js';
import { configValidatorSource } from './config-validator-source.js';

describe('generated configuration validator', () => {
  it('is up to date with CONFIG_ROOT_SCHEMA (else run `pnpm --filter @archipelago/runtime gen:config`)', () => {
    const committed = readFileSync(new URL('./config-validate.generated.ts', import.meta.url), 'utf8');
    expect(committed).toBe(configValidatorSource(CONFIG_ROOT_SCHEMA));
  });

  it('fills in defaults and reports every fault with its path', () => {
    const ok: Record<string, Record<string, unknown>> = {
      blockerb: { type: 'file_blocker', archip_dir: '/b' },
      blockerm: { type: 'file_blocker', archip_dir: '/m' },
    };
    expect(validate(ok)).toBe(true);
    expect(ok.blockerb!.fdcache).toBe(512);
    expect(ok.XSEG).toMatchObject({ SEGMENT_SIZE: 2048 });
    const bad = { blockerb: { type: 'nope', nr_ops: 0 } };
    expect(validate(bad)).toBe(false);
    const errs = (validate as unknown as { errors: { instancePath: string; message: string }[] }).errors;
    expect(errs.map((e) => `${e.instancePath} ${e.message}`)).toEqual(
      expect.arrayContaining([
        " must have required property 'blockerm'",
        '/blockerb/type must be equal to one of the allowed values',
        '/blockerb/nr_ops must be >= 1',
      ]),
    );
  });
});
