import { unmapVolume } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Unmap extends VlmcCommand {
  static override summary = 'Unmap a volume: stop its NBD endpoint, close it and release its lock.';

  static override description =
    `Accepts the volume name, its NBD URI, or its kernel device. In-flight I/O is drained before \
the volume is closed. A stale mapping (its process died) is cleaned up: the entry and the sockets \
nobody answers on any more are removed and this host's lock on the volume is released.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> vol1',
    '<%= config.bin %> <%= command.id %> /dev/nbd0',
    "<%= config.bin %> <%= command.id %> 'nbd+unix:///vol1?socket=/run/archipelago/vol1.sock'",
  ];

  static override args = {
    target: Args.string({ required: true, description: 'Volume name, NBD URI or device.' }),
  };

  async run(): Promise<{ volume: string; stale: boolean }> {
    const { args } = await this.parse(Unmap);
    const r = await unmapVolume(this.session(), args.target);
    this.say(
      r.stale ? `removed stale mapping of ${r.volume} (pid ${r.pid} was gone)` : `unmapped ${r.volume}`,
    );
    return { volume: r.volume, stale: r.stale };
  }
}
