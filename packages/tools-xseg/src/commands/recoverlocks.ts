import { Segment } from '@archipelago/libxseg/segment';
import { Args } from '@oclif/core';
import { specArg, XsegCommand } from '../base.js';

export default class Recoverlocks extends XsegCommand {
  static override summary =
    'Release the segment locks held by dead process <pid>, or by the dead owner of port <pid> (as the admin guide writes it).';
  static override description =
    'The original takes a pid; its admin guide passes the port of the dead peer. Both work: a number that names a port whose owner is dead stands for that owner, anything else is a pid.';
  static override examples = [
    '<%= config.bin %> posix:archipelago: recoverlocks 4242',
    '<%= config.bin %> posix:archipelago: recoverlocks 1',
  ];
  static override args = { spec: specArg, pid: Args.integer({ required: true, min: 1 }) };

  async run(): Promise<{ pid: number; recovered: number; port?: number }> {
    const { args } = await this.parse(Recoverlocks);
    const seg = Segment.join(args.spec);
    try {
      const owner = seg.report().ports.find((p) => p.port === args.pid && p.ownerPid !== 0 && !p.ownerAlive);
      const pid = owner?.ownerPid ?? args.pid;
      const n = seg.recoverLocks(pid);
      this.say(`${owner ? `port ${args.pid}: dead owner ` : ''}pid ${pid}: ${n} locks recovered`);
      return { pid, recovered: n, ...(owner ? { port: args.pid } : {}) };
    } finally {
      seg.close();
    }
  }
}
