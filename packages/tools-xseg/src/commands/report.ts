import { archipError } from '@archipelago/libxseg';
import { type PortReport, Segment } from '@archipelago/libxseg/segment';
import { Args } from '@oclif/core';
import { formatPort, specArg, XsegCommand } from '../base.js';

export default class Report extends XsegCommand {
  static override summary = 'Report one port: owner, queue lengths, lock.';
  static override examples = ['<%= config.bin %> posix:archipelago: report 1'];
  static override args = { spec: specArg, port: Args.integer({ required: true, min: 0 }) };

  async run(): Promise<PortReport | { port: number; assigned: false }> {
    const { args } = await this.parse(Report);
    const seg = Segment.join(args.spec);
    try {
      const r = seg.report();
      if (args.port >= r.nrPorts)
        throw archipError('EINVAL', `port ${args.port} out of range (0..${r.nrPorts - 1})`);
      const p = r.ports.find((x) => x.port === args.port);
      if (!p) {
        this.say(`port ${args.port} is not assigned`);
        return { port: args.port, assigned: false };
      }
      for (const line of formatPort(p, r)) this.say(line);
      return p;
    } finally {
      seg.close();
    }
  }
}
