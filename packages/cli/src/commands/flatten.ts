import { flattenVolume } from '@archipelago/runtime';
import { Args } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Flatten extends VlmcCommand {
  static override summary = 'Copy every block a clone shares with its parent, so that it depends on nothing.';

  static override description =
    `Each shared block is copied as a write would copy it (copy-on-write), so the clone reads the same \
throughout and a killed flatten only leaves fewer blocks copied (run it again). Afterwards the clone has no \
parent: removing the snapshot it came from frees nothing the clone needs. A progress bar is drawn on stderr \
when it is a terminal (with the daemons running, archipelago start, mapperd flattens and the bar counts the \
blocks still shared every 300 ms). A mapped clone is flattened while it serves I/O: by its holder (no \
progress bar then), or with the daemons running by mapperd.`;

  static override examples = ['<%= config.bin %> <%= command.id %> web-disk'];

  static override args = {
    name: Args.string({ required: true, description: 'Clone to flatten.' }),
  };

  async run(): Promise<{ name: string; copied: number; parent: string | null; seconds: number }> {
    const { args } = await this.parse(Flatten);
    const out = await this.withProgress('flatten', (onProgress) =>
      flattenVolume(this.session(), args.name, onProgress),
    );
    this.say(
      `flattened ${out.name}: ${out.copied} block${out.copied === 1 ? '' : 's'} copied` +
        (out.parent ? `, no longer depends on ${out.parent}` : ''),
    );
    return out;
  }
}
