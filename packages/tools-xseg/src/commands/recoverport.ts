import { type Recovery, Segment } from '@archipelago/libxseg/segment';
import { Args, Flags } from '@oclif/core';
import { specArg, XsegCommand } from '../base.js';

export default class Recoverport extends XsegCommand {
  static override summary = 'Fail back to their senders the requests a dead peer had accepted on <port>.';
  static override description =
    'Also frees the replies and requests the dead peer held. Refused while the port owner is alive, unless --force.';
  static override examples = ['<%= config.bin %> posix:archipelago: recoverport 1'];
  static override args = { spec: specArg, port: Args.integer({ required: true, min: 0 }) };
  static override flags = { force: Flags.boolean({ summary: 'Recover even though the owner is alive.' }) };

  async run(): Promise<Recovery> {
    const { args, flags } = await this.parse(Recoverport);
    const seg = Segment.join(args.spec);
    try {
      const r = seg.recoverPort(args.port, { force: flags.force });
      this.say(`port ${r.port}: ${r.failed} accepted requests failed back, ${r.freed} requests freed`);
      return r;
    } finally {
      seg.close();
    }
  }
}
