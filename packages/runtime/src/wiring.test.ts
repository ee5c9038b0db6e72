import { describe, expect, it } from 'vitest';
import { COMPOSE_ENV, composeOf } from './wiring.js';

describe('composeOf', () => {
  it('takes what the caller asks for, vlmcd when it asks nothing', () => {
    expect(composeOf('local', {})).toBe('local');
    expect(composeOf(undefined, {})).toBe('vlmcd');
    expect(composeOf('local', { [COMPOSE_ENV]: '' })).toBe('local');
  });

  it('lets ARCHIPELAGO_COMPOSE override either way', () => {
    expect(composeOf('local', { [COMPOSE_ENV]: 'vlmcd' })).toBe('vlmcd');
    expect(composeOf(undefined, { [COMPOSE_ENV]: 'local' })).toBe('local');
  });

  it('refuses any other value with an error that names the variable and the choices', () => {
    expect(() => composeOf('local', { [COMPOSE_ENV]: 'vlmd' })).toThrow(
      /ARCHIPELAGO_COMPOSE=vlmd: expected "local" .* or "vlmcd"/,
    );
  });
});
