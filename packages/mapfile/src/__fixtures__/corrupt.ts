import { ArchipelagoError } from '@archipelago/libxseg';
import { expect } from 'vitest';

/** Runs `fn`, expects an ECORRUPT_MAP error naming the volume and matching `fault`. */
export function expectCorrupt(fn: () => unknown, volume: string, fault: RegExp): ArchipelagoError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeDefined();
  expect(ArchipelagoError.is(caught, 'ECORRUPT_MAP')).toBe(true);
  const err = caught as ArchipelagoError;
  expect(err.message).toContain(volume);
  expect(err.message).toMatch(fault);
  expect(err.details.volume).toBe(volume);
  return err;
}
