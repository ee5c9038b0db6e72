import { spawn } from 'node:child_process';
import { openSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { ArchipelagoError, type ErrorCode } from '@archipelago/libxseg';
import { validateVolumeName } from '@archipelago/mapfile';
import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { attachDevice, nbdModuleAvailable } from '../endpoint/kernel.js';
import type { MappedEntry } from '../endpoint/runstate.js';

const HOST = fileURLToPath(new URL('../endpoint/host.js', import.meta.url));
const READY_TIMEOUT_MS = 60_000;

export default class MapCmd extends VlmcCommand {
  static override summary = 'Map a volume: serve it over NBD from a background process.';

  static override description =
    `Starts a background endpoint process that opens the volume (takes its lock) and serves it \
over NBD, waits until it accepts connections, and prints the NBD URI: \
nbd+unix:///<name>?socket=PATH by default, or nbd://127.0.0.1:PORT/<name> with --port. \
qemu, qemu-img, nbdinfo, nbdcopy, fio and the kernel's nbd-client can use it as a disk. \
Snapshots (and --readonly maps) are served read-only. While mapped, "vlmc snapshot", "info" and \
"close" go to that process, and "remove" and "rename" are refused. Undo with "vlmc unmap".`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> vol1',
    'qemu-img info "$(<%= config.bin %> <%= command.id %> vol1)"',
    '<%= config.bin %> <%= command.id %> vol1-snap --port 10809',
    '<%= config.bin %> <%= command.id %> vol1 --device /dev/nbd0',
  ];

  static override args = {
    name: Args.string({ required: true, description: 'Volume or snapshot to map.' }),
  };

  static override flags = {
    readonly: Flags.boolean({ char: 'r', summary: 'Serve read-only (always so for snapshots).' }),
    socket: Flags.string({
      summary: 'Unix socket to listen on (default: in the run directory).',
      helpValue: 'PATH',
      exclusive: ['port'],
    }),
    port: Flags.integer({
      summary: 'TCP port on 127.0.0.1 instead of a unix socket (0 picks one).',
      helpValue: 'N',
      min: 0,
      max: 65535,
    }),
    device: Flags.string({
      summary: 'Also attach this kernel NBD device through nbd-client.',
      helpValue: '/dev/nbdX',
    }),
  };

  async run(): Promise<MappedEntry> {
    const { args, flags } = await this.parse(MapCmd);
    validateVolumeName(args.name);
    if (flags.device && !nbdModuleAvailable(flags.device)) {
      throw new ArchipelagoError(
        'ENOTSUP',
        `cannot attach ${flags.device}: this kernel has no nbd module loaded (try "modprobe nbd"); map without --device and use the NBD URI`,
        { details: { device: flags.device } },
      );
    }
    const state = this.runState();
    const existing = await state.read(args.name);
    if (existing?.alive) {
      throw new ArchipelagoError(
        'EBUSY',
        `"${args.name}" is already mapped at ${existing.uri} (pid ${existing.pid})`,
        {
          details: { volume: args.name, uri: existing.uri, pid: existing.pid },
        },
      );
    }
    if (existing) await state.remove(args.name); // stale: its process is gone
    // Fail early, in this process, for a volume that does not exist or is locked elsewhere.
    const rt = await this.runtime();
    const info = await rt.mapper.info(args.name);
    if (info.lockOwner !== null && info.lockOwner !== rt.identity) {
      throw new ArchipelagoError('ELOCKED', `volume "${args.name}" is locked by ${info.lockOwner}`, {
        details: { volume: args.name, owner: info.lockOwner },
      });
    }
    await mkdir(state.dir, { recursive: true, mode: 0o770 });
    const entry = await this.startHost(
      {
        config: this.configuration().path,
        volume: args.name,
        readonly: flags.readonly,
        ...(flags.socket ? { socket: flags.socket } : {}),
        ...(flags.port !== undefined ? { port: flags.port } : {}),
        runDir: state.dir,
      },
      state.logPath(args.name),
    );
    if (flags.device) {
      try {
        await attachDevice(entry, flags.device);
      } catch (e) {
        process.kill(entry.pid, 'SIGTERM');
        throw e;
      }
      entry.device = flags.device;
      await state.write(entry);
    }
    this.log(entry.uri);
    if (entry.device) this.say(`attached ${entry.device}`);
    return entry;
  }

  /** Spawns the holder, detached, and waits for its READY line. */
  private startHost(req: object, logFile: string): Promise<MappedEntry> {
    const log = openSync(logFile, 'a', 0o660);
    const child = spawn(process.execPath, [HOST], {
      detached: true,
      stdio: ['ignore', 'pipe', log],
      env: {
        ...process.env,
        ARCHIPELAGO_ENDPOINT: JSON.stringify(req),
        UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16',
        // libuv submits file I/O through io_uring by default here, and the kernel completes
        // buffered writes inline on the event-loop thread; with it off they run on the thread
        // pool, in parallel (bench/nbd: 4 KiB random write +35%, QD1 read +30%). libuv reads it
        // when the loop starts, so it must be in the process's environment, not set from JS.
        UV_USE_IO_URING: process.env.UV_USE_IO_URING ?? '0',
      },
    });
    return new Promise((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => {
        child.kill('SIGTERM');
        reject(
          new ArchipelagoError(
            'ETIMEDOUT',
            `the endpoint did not start within ${READY_TIMEOUT_MS / 1000} s; see ${logFile}`,
          ),
        );
      }, READY_TIMEOUT_MS);
      const done = () => {
        clearTimeout(timer);
        child.stdout?.destroy();
        child.unref();
      };
      child.stdout?.setEncoding('utf8');
      child.stdout?.on('data', (chunk: string) => {
        out += chunk;
        const nl = out.indexOf('\n');
        if (nl < 0) return;
        const line = out.slice(0, nl);
        done();
        if (line.startsWith('READY ')) resolve(JSON.parse(line.slice(6)) as MappedEntry);
        else if (line.startsWith('ERROR ')) {
          const e = JSON.parse(line.slice(6)) as {
            code: ErrorCode;
            message: string;
            details?: Record<string, unknown>;
          };
          reject(new ArchipelagoError(e.code, e.message, { details: e.details ?? {} }));
        } else
          reject(new ArchipelagoError('EIO', `unexpected output from the endpoint: ${line}; see ${logFile}`));
      });
      child.on('exit', (code) => {
        done();
        reject(
          new ArchipelagoError(
            'EIO',
            `the endpoint exited (status ${code}) before it was ready; see ${logFile}`,
          ),
        );
      });
    });
  }
}
