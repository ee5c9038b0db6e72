import type { MappedEntry } from '@archipelago/runtime';
import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { mapCommand } from '../fast/commands.js';

export default class MapCmd extends VlmcCommand {
  static override summary = 'Map a volume: serve it over NBD from a background process.';

  static override description =
    `Has the host's background endpoint process open the volume (take its lock) and serve it \
over NBD, waits until it accepts connections, and prints the NBD URI: \
nbd+unix:///<name>?socket=PATH by default, or nbd://127.0.0.1:PORT/<name> with --port. \
qemu, qemu-img, nbdinfo, nbdcopy, fio and the kernel's nbd-client can use it as a disk. \
Snapshots (and --readonly maps) are served read-only. While mapped, "vlmc snapshot", "info" and \
"close" go to that process, and "remove" and "rename" are refused. Undo with "vlmc unmap". \
A mapping whose endpoint died (crash, kill -9) is mapped again at once, on the same socket: what \
it left (its entry, its sockets, its lock) is taken over, so a client that reconnects (qemu's \
reconnect-delay) goes on. Refused with EBUSY: a volume already mapped, a socket or port in use by \
another endpoint or process; with EINVAL: a --socket path holding a file or in a missing directory. \
With --fuse PATH the volume is also served as the regular file PATH (a one-file FUSE mount, created \
when missing; read-only for --readonly maps and snapshots), and --device loop (or /dev/loopN) puts a \
loop device over it: a kernel block device on kernels without the nbd module. The device, or else \
the file, is printed instead of the URI. \
One endpoint process serves all the volumes mapped with one configuration (it is started by the \
first "vlmc map" and exits after the last "vlmc unmap"); each volume keeps its own sockets, lock \
and errors. ARCHIPELAGO_ENDPOINT_MODE=per-volume in the environment starts one process per volume \
instead.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> vol1',
    'qemu-img info "$(<%= config.bin %> <%= command.id %> vol1)"',
    '<%= config.bin %> <%= command.id %> vol1-snap --port 10809',
    '<%= config.bin %> <%= command.id %> vol1 --device /dev/nbd0',
    '<%= config.bin %> <%= command.id %> vol1 --fuse /run/vol1.img --device loop',
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
      summary:
        'Also attach this kernel NBD device through nbd-client; with --fuse, a loop device over the file: "loop" (the first free one) or /dev/loopN.',
      helpValue: '/dev/nbdX|loop',
    }),
    fuse: Flags.string({
      summary: 'Also serve the volume as this regular file through FUSE (created when missing).',
      helpValue: 'PATH',
    }),
    'vhost-user': Flags.string({
      summary:
        "Also serve the volume as a vhost-user-blk back-end on this unix socket (qemu's vhost-user-blk-pci).",
      helpValue: 'SOCKET',
    }),
    queues: Flags.integer({
      summary: 'The most virtqueues the vhost-user-blk device offers (qemu picks with num-queues).',
      helpValue: 'N',
      min: 1,
      max: 64,
      dependsOn: ['vhost-user'],
    }),
  };

  async run(): Promise<MappedEntry> {
    const { args, flags } = await this.parse(MapCmd);
    return mapCommand(
      this.session(),
      args.name,
      {
        readonly: flags.readonly,
        ...(flags.socket ? { socket: flags.socket } : {}),
        ...(flags.port !== undefined ? { port: flags.port } : {}),
        ...(flags.device ? { device: flags.device } : {}),
        ...(flags.fuse ? { fuse: flags.fuse } : {}),
        ...(flags['vhost-user'] ? { vhostUser: flags['vhost-user'], queues: flags.queues ?? 1 } : {}),
      },
      (line) => this.log(line),
    );
  }
}
