import { formatSpec, parseSpec, Segment } from '@archipelago/libxseg/segment';
import { Flags } from '@oclif/core';
import { specArg, XsegCommand } from '../base.js';

export default class Create extends XsegCommand {
  static override summary = 'Create the segment (/dev/shm/<name>).';
  static override examples = ['<%= config.bin %> posix:archipelago:1024:2048:512:12 create'];
  static override args = { spec: specArg };
  static override flags = {
    requests: Flags.integer({ summary: 'Requests in the pool.', default: 4096, min: 16 }),
  };

  async run(): Promise<{ spec: string; segmentSize: number }> {
    const { args, flags } = await this.parse(Create);
    const spec = parseSpec(args.spec);
    const seg = Segment.create(spec, { nrReqs: flags.requests });
    const g = seg.geometry();
    seg.close();
    this.say(`created ${formatSpec(spec)} (${g.segmentSize} bytes)`);
    return { spec: formatSpec(spec), segmentSize: g.segmentSize };
  }
}
