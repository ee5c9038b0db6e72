import { archipError } from '@archipelago/libxseg';
import { Segment } from '@archipelago/libxseg/segment';
import { Args } from '@oclif/core';
import { specArg, XsegCommand } from '../base.js';

export default class Recoverlocks extends XsegCommand {
  static override summary =
    'Release the segment locks held by the dead peer bound to <port> (as the admin guide writes it), or by dead process <pid>.';
  static override description =
    `The admin guide's "Peer failure" procedure passes the port of the dead peer; the original tool took a pid. \
Both work: a number that names a bound port stands for the process that bound it (refused with EBUSY while that \
process is alive); any other number is a pid.`;
  static override examples = [
    '<%= config.bin %> posix:archipelago: recoverlocks 1',
    '<%= config.bin %> posix:archipelago: recoverlocks 4242',
  ];
  static override args = {
    spec: specArg,
    pid: Args.integer({ required: true, min: 1, description: 'Port of the dead peer, or its pid.' }),
  };

  async run(): Promise<{ pid: number; recovered: number; port?: number }> {
    const { args } = await this.parse(Recoverlocks);
    const seg = Segment.join(args.spec);
    try {
      const owner = seg.report().ports.find((p) => p.port === args.pid && p.ownerPid !== 0);
      if (owner?.ownerAlive) {
        throw archipError(
          'EBUSY',
          `port ${owner.port} is bound by pid ${owner.ownerPid}, which is alive: recoverlocks is for a peer that died (stop or kill it first)`,
          { details: { port: owner.port, pid: owner.ownerPid } },
        );
      }
      const pid = owner?.ownerPid ?? args.pid;
      const n = seg.recoverLocks(pid);
      this.say(`${owner ? `port ${args.pid}: dead owner ` : ''}pid ${pid}: ${n} locks recovered`);
      return { pid, recovered: n, ...(owner ? { port: args.pid } : {}) };
    } finally {
      seg.close();
    }
  }
}
