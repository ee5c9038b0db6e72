import { Segment } from '@archipelago/libxseg/segment';
import { Args } from '@oclif/core';
import { specArg, XsegCommand } from '../base.js';

export default class Recoverlocks extends XsegCommand {
  static override summary =
    'Release the segment locks held by dead process <pid> (a PID, as in the original; not a port).';
  static override examples = ['<%= config.bin %> posix:archipelago: recoverlocks 4242'];
  static override args = { spec: specArg, pid: Args.integer({ required: true, min: 1 }) };

  async run(): Promise<{ pid: number; recovered: number }> {
    const { args } = await this.parse(Recoverlocks);
    const seg = Segment.join(args.spec);
    try {
      const n = seg.recoverLocks(args.pid);
      this.say(`pid ${args.pid}: ${n} locks recovered`);
      return { pid: args.pid, recovered: n };
    } finally {
      seg.close();
    }
  }
}
