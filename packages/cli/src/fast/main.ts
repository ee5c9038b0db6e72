/**
 * `vlmc`'s fast dispatch (issue 18): the hot command lines run their command's body
 * (./commands.ts) without oclif, whose evaluation and `Config.load` were ~40 ms of every call.
 *
 * Handled here, exactly these forms (after `normalizeArgv`, so global options may also come
 * before the command word, as the original vlmc took them):
 *
 *     info NAME                 [--json] [-c PATH | --config PATH | --config=PATH]
 *     snapshot NAME SNAP        [--json] [-c ...]
 *     create NAME [--snap SNAP] [--size SIZE | -s SIZE] [--json] [-c ...]   (also --snap=, --size=)
 *
 * Everything else (help, `--`, any other flag or command, a value that is empty or starts with
 * `-`, a flag given twice, a missing or extra argument) is left to oclif, which then parses and
 * reports it as before. Output, errors (`vlmc: CODE: message`, or the JSON error object), exit
 * status and the configuration notices on stderr are those of the oclif commands (src/base.ts
 * and @archipelago/cli-kit's ToolCommand), which the tests compare call by call.
 * `ARCHIPELAGO_CLI_FAST=0` turns the dispatch off (bin/vlmc.js).
 */
import { jsonReplacer, normalizeArgv } from '@archipelago/cli-kit';
import { describeError } from '@archipelago/libxseg';
import { Session } from '@archipelago/runtime';
import { createCommand, infoCommand, type Say, snapshotCommand } from './commands.js';

/** A command line the fast dispatch runs. */
export type FastCall =
  | { command: 'info'; name: string; json: boolean; config?: string }
  | { command: 'snapshot'; name: string; snap: string; json: boolean; config?: string }
  | { command: 'create'; name: string; snap?: string; size?: string; json: boolean; config?: string };

/** Positional arguments of each command. */
const ARITY = { info: 1, snapshot: 2, create: 1 } as const;

/** Flags with a value: the command line's spelling -> the flag. */
const VALUE_FLAGS: Record<string, Record<string, 'config' | 'snap' | 'size'>> = {
  info: { '-c': 'config', '--config': 'config' },
  snapshot: { '-c': 'config', '--config': 'config' },
  create: { '-c': 'config', '--config': 'config', '--snap': 'snap', '--size': 'size', '-s': 'size' },
};

/** A value oclif would take as it is: not empty, not an option. */
const plain = (v: string | undefined): boolean => v !== undefined && v !== '' && !v.startsWith('-');

/** The fast form of `args` (vlmc's command line, as bin/vlmc.js gets it), or undefined: oclif's. */
export function parseFast(args: readonly string[]): FastCall | undefined {
  const argv = normalizeArgv(args);
  const command = argv[0];
  if (command !== 'info' && command !== 'snapshot' && command !== 'create') return undefined;
  const valueFlags = VALUE_FLAGS[command]!;
  const positional: string[] = [];
  const values: Partial<Record<'config' | 'snap' | 'size', string>> = {};
  let json = false;
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--json') {
      if (json) return undefined;
      json = true;
      continue;
    }
    if (plain(a)) {
      positional.push(a);
      continue;
    }
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    const spelled = eq > 0 ? a.slice(0, eq) : a;
    const flag = valueFlags[spelled];
    if (flag === undefined || values[flag] !== undefined) return undefined;
    const value = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (value === undefined || !plain(value)) return undefined;
    values[flag] = value;
  }
  if (positional.length !== ARITY[command]) return undefined;
  const name = positional[0]!;
  const config = values.config === undefined ? {} : { config: values.config };
  switch (command) {
    case 'info':
      return { command, name, json, ...config };
    case 'snapshot':
      return { command, name, snap: positional[1]!, json, ...config };
    case 'create':
      return {
        command,
        name,
        json,
        ...config,
        ...(values.snap === undefined ? {} : { snap: values.snap }),
        ...(values.size === undefined ? {} : { size: values.size }),
      };
  }
}

/**
 * Runs `call` as its oclif command would: the body, the session closed afterwards, the result as
 * JSON with `--json`, a failure reported once (exit status 1).
 */
export async function runFast(call: FastCall): Promise<void> {
  let failed = false;
  const report = (err: unknown): void => {
    if (failed) return;
    failed = true;
    process.exitCode = 1;
    const r = describeError(err);
    if (call.json) {
      process.stdout.write(`${JSON.stringify({ error: r }, jsonReplacer, 2)}\n`);
      return;
    }
    process.stderr.write(`vlmc: ${r.code}: ${r.message}\n`);
    const debug = process.env.ARCHIPELAGO_DEBUG || process.env.VLMC_DEBUG;
    if (r.code === 'INTERNAL' && debug && err instanceof Error && err.stack) {
      process.stderr.write(`${err.stack}\n`);
    }
  };
  const say: Say = (line) => {
    if (!call.json) process.stdout.write(`${line}\n`);
  };
  let session: Session | undefined;
  const open = (): Session => {
    session ??= new Session({
      ...(call.config === undefined ? {} : { config: call.config }),
      notice: (line) => process.stderr.write(`vlmc: notice: ${line}\n`),
    });
    return session;
  };
  let result: unknown;
  let error: unknown;
  try {
    switch (call.command) {
      case 'info':
        result = await infoCommand(open(), call.name, {}, say);
        break;
      case 'snapshot':
        result = await snapshotCommand(open(), call.name, call.snap, say);
        break;
      case 'create':
        result = await createCommand(
          open(),
          call.name,
          { size: call.size, snap: call.snap, load: () => ({}) },
          say,
        );
        break;
    }
  } catch (e) {
    error = e;
    report(e);
  }
  try {
    await session?.close();
  } catch (e) {
    if (error === undefined) report(e);
  }
  if (result && call.json && !failed) process.stdout.write(`${JSON.stringify(result, jsonReplacer, 2)}\n`);
}

/**
 * bin/vlmc.js's entry: runs `args` here when it is a fast form (the promise of its run), else
 * returns undefined and the caller hands `args` to oclif.
 */
export function main(args: readonly string[]): Promise<void> | undefined {
  const call = parseFast(args);
  return call && runFast(call);
}
