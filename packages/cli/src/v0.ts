/**
 * Pithos v0 maps on the command line, as the original vlmc took them (`-v0/--assume_v0`,
 * `--v0_size N`) and its Ganeti `create` used them (`create --snap <v0 map> --v0_size <size>`): a
 * v0 map is a Pithos file's hashmap (named by its 64-hex hash, raw 32-byte block hashes, no
 * header), so nothing in it says it is one, nor its size.
 */
import { parseSize } from '@archipelago/cli-kit';
import type { LoadOptions } from '@archipelago/mapper';
import { Flags } from '@oclif/core';

export const v0Flags = {
  'assume-v0': Flags.boolean({
    aliases: ['v0', 'assume_v0'],
    summary: 'The map is a Pithos v0 hashmap (no header); its size is 4 MiB per block unless --v0-size.',
  }),
  'v0-size': Flags.string({
    aliases: ['v0_size'],
    summary: 'Size in bytes of the Pithos v0 map (implies --assume-v0; a suffix K, M, G... is allowed).',
    helpValue: 'BYTES',
  }),
};

/** The mapper's load options for the v0 flags (empty without them). */
export function v0Load(flags: { 'assume-v0'?: boolean; 'v0-size'?: string | undefined }): LoadOptions {
  const sizeText = flags['v0-size'];
  if (sizeText === undefined) return flags['assume-v0'] ? { assumeV0: true } : {};
  const v0Size = /^\s*\d+\s*$/.test(sizeText) ? Number(sizeText) : parseSize(sizeText);
  return { assumeV0: true, v0Size };
}
