import { unlockVolume } from '@archipelago/runtime';
import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';

export default class Unlock extends VlmcCommand {
  static override summary = 'Unlock a volume; -f breaks a lock another host holds.';

  static override description =
    `Only the lock's owner may unlock it. To recover from a crashed host, check the owner \
first ("vlmc info NAME" shows it) and make sure that host no longer uses the volume, then break the lock with -f.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> vol1',
    {
      description: 'Break the stale lock of a dead node',
      command: '<%= config.bin %> <%= command.id %> -f vol1',
    },
  ];

  static override args = {
    name: Args.string({ required: true, description: 'Volume to unlock.' }),
  };

  static override flags = {
    force: Flags.boolean({
      char: 'f',
      summary: 'Break the lock even when another host holds it.',
      default: false,
    }),
  };

  async run(): Promise<{ name: string; unlocked: true; previousOwner: string | null }> {
    const { args, flags } = await this.parse(Unlock);
    const r = await unlockVolume(this.session(), args.name, { force: flags.force });
    const broke = r.previousOwner && r.previousOwner !== r.identity;
    this.say(broke ? `unlocked ${r.name} (broke the lock of ${r.previousOwner})` : `unlocked ${r.name}`);
    return { name: r.name, unlocked: true, previousOwner: r.previousOwner };
  }
}
