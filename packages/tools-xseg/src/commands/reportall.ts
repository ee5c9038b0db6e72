import { Segment, type SegmentReport } from '@archipelago/libxseg/segment';
import { formatReport, specArg, XsegCommand } from '../base.js';

export default class Reportall extends XsegCommand {
  static override summary = 'Report heap use, requests, locks and their owners, and every used port.';
  static override examples = ['<%= config.bin %> posix:archipelago: reportall --json'];
  static override args = { spec: specArg };

  async run(): Promise<SegmentReport> {
    const { args } = await this.parse(Reportall);
    const seg = Segment.join(args.spec);
    try {
      const r = seg.report();
      const g = seg.geometry();
      const spec = `posix:${g.name}:${g.dynports}:${g.nrPorts}:${g.heapSize / 2 ** 20}:${(g as { pageShift?: number }).pageShift ?? 12}`;
      for (const line of formatReport(r, spec)) this.say(line);
      return r;
    } finally {
      seg.close();
    }
  }
}
