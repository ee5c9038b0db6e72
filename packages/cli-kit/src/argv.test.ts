import { describe, expect, it } from 'vitest';
import { normalizeArgv } from './argv.js';

describe('normalizeArgv', () => {
  it('moves global options given before the command (as the original tools took them) behind it', () => {
    expect(normalizeArgv(['-c', 'a.conf', 'create', 'v', '--size', '1G'])).toEqual([
      'create',
      '-c',
      'a.conf',
      'v',
      '--size',
      '1G',
    ]);
    expect(normalizeArgv(['--json', '--config=a.conf', 'ls'])).toEqual(['ls', '--json', '--config=a.conf']);
    expect(normalizeArgv(['-ca.conf', 'start'])).toEqual(['start', '-ca.conf']);
  });

  it('leaves a command line in oclif order alone', () => {
    expect(normalizeArgv(['info', 'v', '--json'])).toEqual(['info', 'v', '--json']);
    expect(normalizeArgv([])).toEqual([]);
    expect(normalizeArgv(['--json'])).toEqual(['--json']);
  });

  it('turns `help COMMAND` into `COMMAND --help`', () => {
    expect(normalizeArgv(['help', 'create'])).toEqual(['create', '--help']);
    expect(normalizeArgv(['help'])).toEqual(['--help']);
    expect(normalizeArgv(['-c', 'a.conf', 'help', 'map'])).toEqual(['map', '-c', 'a.conf', '--help']);
  });
});
