import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { unmapCommand } from '../fast/commands.js';

export default class Unmap extends VlmcCommand {
  static override summary = 'Unmap a volume: stop serving it, close it and release its lock.';

  static override description =
    `Accepts the volume name, its NBD URI, its kernel device or its FUSE file. In-flight I/O is \
drained before the volume is closed. A FUSE map is taken down in order: its loop device is \
detached (refused with EBUSY while it is mounted: unmount it first), then its file unmounted, then \
the volume closed. A stale mapping (its process died) is cleaned up: the entry and the sockets \
nobody answers on any more are removed and this host's lock on the volume is released. The \
endpoint process goes on serving the host's other mapped volumes; it exits with the last.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> vol1',
    '<%= config.bin %> <%= command.id %> /dev/nbd0',
    '<%= config.bin %> <%= command.id %> /dev/loop0',
    "<%= config.bin %> <%= command.id %> 'nbd+unix:///vol1?socket=/run/archipelago/vol1.sock'",
  ];

  static override args = {
    target: Args.string({ required: true, description: 'Volume name, NBD URI, device or FUSE file.' }),
  };

  async run(): Promise<{ volume: string; stale: boolean }> {
    const { args } = await this.parse(Unmap);
    return unmapCommand(this.session(), args.target, (line) => this.say(line));
  }
}
