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
 *     map NAME [-r | --readonly] [--socket PATH | --port N] [--json] [-c ...]
 *     unmap TARGET              [--json] [-c ...]
 *     showmapped                [--json] [-c ...]
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
import {
  createCommand,
  infoCommand,
  mapCommand,
  type Say,
  showmappedCommand,
  snapshotCommand,
  unmapCommand,
} from './commands.js';

/** A command line the fast dispatch runs. */
export type FastCall =
  | { command: 'info'; name: string; json: boolean; config?: string }
  | { command: 'snapshot'; name: string; snap: string; json: boolean; config?: string }
  | { command: 'create'; name: string; snap?: string; size?: string; json: boolean; config?: string }
  | {
      command: 'map';
      name: string;
      readonly: boolean;
      socket?: string;
      port?: number;
      json: boolean;
      config?: string;
    }
  | { command: 'unmap'; name: string; json: boolean; config?: string }
  | { command: 'showmapped'; json: boolean; config?: string };

type Command = FastCall['command'];
const COMMANDS: ReadonlySet<string> = new Set<Command>([
  'info',
  'snapshot',
  'create',
  'map',
  'unmap',
  'showmapped',
]);

/** Positional arguments of each command. */
const ARITY: Record<Command, number> = { info: 1, snapshot: 2, create: 1, map: 1, unmap: 1, showmapped: 0 };

type ValueFlag = 'config' | 'snap' | 'size' | 'socket' | 'port';
const CONFIG = { '-c': 'config', '--config': 'config' } as const;

/** Flags with a value: the command line's spelling -> the flag. */
const VALUE_FLAGS: Record<Command, Record<string, ValueFlag>> = {
  info: CONFIG,
  snapshot: CONFIG,
  create: { ...CONFIG, '--snap': 'snap', '--size': 'size', '-s': 'size' },
  map: { ...CONFIG, '--socket': 'socket', '--port': 'port' },
  unmap: CONFIG,
  showmapped: CONFIG,
};

/** Boolean flags (besides `--json`): `map -r`. */
const BOOLEAN_FLAGS: Partial<Record<Command, Record<string, 'readonly'>>> = {
  map: { '-r': 'readonly', '--readonly': 'readonly' },
};

/** A port oclif's integer flag (0..65535) takes as this number: plain decimal digits only. */
const PORT = /^(0|[1-9][0-9]{0,4})$/;

/** A value oclif would take as it is: not empty, not an option. */
const plain = (v: string | undefined): boolean => v !== undefined && v !== '' && !v.startsWith('-');

/** The fast form of `args` (vlmc's command line, as bin/vlmc.js gets it), or undefined: oclif's. */
export function parseFast(args: readonly string[]): FastCall | undefined {
  const argv = normalizeArgv(args);
  const command = argv[0];
  if (command === undefined || !COMMANDS.has(command)) return undefined;
  const cmd = command as Command;
  const valueFlags = VALUE_FLAGS[cmd];
  const booleanFlags = BOOLEAN_FLAGS[cmd] ?? {};
  const positional: string[] = [];
  const values: Partial<Record<ValueFlag, string>> = {};
  let json = false;
  let readonly = false;
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--json') {
      if (json) return undefined;
      json = true;
      continue;
    }
    if (booleanFlags[a] !== undefined) {
      if (readonly) return undefined;
      readonly = true;
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
  if (positional.length !== ARITY[cmd]) return undefined;
  const name = positional[0]!;
  const config = values.config === undefined ? {} : { config: values.config };
  switch (cmd) {
    case 'info':
      return { command: cmd, name, json, ...config };
    case 'snapshot':
      return { command: cmd, name, snap: positional[1]!, json, ...config };
    case 'create':
      return {
        command: cmd,
        name,
        json,
        ...config,
        ...(values.snap === undefined ? {} : { snap: values.snap }),
        ...(values.size === undefined ? {} : { size: values.size }),
      };
    case 'map': {
      // oclif's checks (the range of --port, --socket with --port) stay oclif's.
      if (values.port !== undefined && (!PORT.test(values.port) || Number(values.port) > 65535))
        return undefined;
      if (values.port !== undefined && values.socket !== undefined) return undefined;
      return {
        command: cmd,
        name,
        readonly,
        json,
        ...config,
        ...(values.socket === undefined ? {} : { socket: values.socket }),
        ...(values.port === undefined ? {} : { port: Number(values.port) }),
      };
    }
    case 'unmap':
      return { command: cmd, name, json, ...config };
    case 'showmapped':
      return { command: cmd, json, ...config };
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
      case 'map':
        result = await mapCommand(
          open(),
          call.name,
          {
            readonly: call.readonly,
            ...(call.socket === undefined ? {} : { socket: call.socket }),
            ...(call.port === undefined ? {} : { port: call.port }),
          },
          say,
        );
        break;
      case 'unmap':
        result = await unmapCommand(open(), call.name, say);
        break;
      case 'showmapped':
        result = await showmappedCommand(open(), say);
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
