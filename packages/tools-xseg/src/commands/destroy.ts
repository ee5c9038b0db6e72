import { parseSpec, Segment } from '@archipelago/libxseg/segment';
import { specArg, XsegCommand } from '../base.js';

export default class Destroy extends XsegCommand {
  static override summary = 'Destroy the segment (unlink /dev/shm/<name>; mapped peers keep their mapping).';
  static override examples = ['<%= config.bin %> posix:archipelago: destroy'];
  static override args = { spec: specArg };

  async run(): Promise<{ destroyed: string }> {
    const { args } = await this.parse(Destroy);
    const { name } = parseSpec(args.spec);
    Segment.destroy(name);
    this.say(`destroyed ${name}`);
    return { destroyed: name };
  }
}
