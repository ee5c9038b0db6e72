import { openEmbeddedRuntime } from '@archipelago/cli';
import { type GatewayUser, startGateway } from '@archipelago/gateway';
import { ArchipelagoError } from '@archipelago/libxseg';
import { Flags } from '@oclif/core';
import { ArchipelagoCommand } from '../base.js';

export default class Gateway extends ArchipelagoCommand {
  static override summary =
    'Run the HTTP file gateway (Pithos hashmap API, Swift v1 auth) in the foreground.';

  static override description =
    `Serves files (read-only maps of content-addressed blocks) over HTTP from the blockers of the \
configuration. Stops cleanly on SIGTERM or SIGINT. See packages/gateway/README.md for the API.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> --port 8080 --user test,test:tester,testing',
    '<%= config.bin %> <%= command.id %> --no-auth',
  ];

  static override flags = {
    host: Flags.string({ default: '127.0.0.1', summary: 'Address to listen on.' }),
    port: Flags.integer({ default: 8080, min: 0, max: 65535, summary: 'TCP port (0 picks one).' }),
    user: Flags.string({
      multiple: true,
      summary: 'A Swift user: ACCOUNT,USER,KEY[,TOKEN] (repeatable).',
      helpValue: 'ACCOUNT,USER,KEY[,TOKEN]',
    }),
    token: Flags.string({ multiple: true, summary: 'A pre-shared token: TOKEN,ACCOUNT (repeatable).' }),
    'no-auth': Flags.boolean({ summary: 'Open every account without authentication (testing only).' }),
    'bridge-account': Flags.string({ multiple: true, summary: 'Account allowed to use the volume bridges.' }),
    'public-url': Flags.string({ summary: 'Base URL clients reach the gateway at (for X-Storage-Url).' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Gateway);
    const users: GatewayUser[] = (flags.user ?? []).map((u) => {
      const [account, user, key, token] = u.split(',');
      if (!account || !user || !key)
        throw new ArchipelagoError('EINVAL', `bad --user "${u}": want ACCOUNT,USER,KEY[,TOKEN]`);
      return { account, user, key, ...(token ? { token } : {}) };
    });
    const tokens: Record<string, string> = {};
    for (const t of flags.token ?? []) {
      const [token, account] = t.split(',');
      if (!token || !account) throw new ArchipelagoError('EINVAL', `bad --token "${t}": want TOKEN,ACCOUNT`);
      tokens[token] = account;
    }
    if (!flags['no-auth'] && users.length === 0 && Object.keys(tokens).length === 0) {
      throw new ArchipelagoError('EINVAL', 'give at least one --user or --token, or --no-auth');
    }
    // The gateway runs its own mapper over the blockers (embedded wiring).
    const rt = await openEmbeddedRuntime(this.loadConfig(flags.config));
    const gw = await startGateway({
      blockerm: rt.blockerm,
      blockerb: rt.blockerb,
      mapper: rt.mapper,
      host: flags.host,
      port: flags.port,
      auth: flags['no-auth'] ? false : { users, tokens },
      ...(flags['bridge-account'] ? { bridgeAccounts: flags['bridge-account'] } : {}),
      ...(flags['public-url'] ? { publicUrl: flags['public-url'] } : {}),
    });
    // Printed at start (the command runs until stopped): a line, or one JSON record with --json.
    this.say(`gateway listening on ${gw.url}`);
    if (this.jsonEnabled()) process.stdout.write(`${JSON.stringify({ url: gw.url, port: gw.port })}\n`);
    await new Promise<void>((resolve) => {
      const stop = () => resolve();
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    await gw.close();
    await rt.close();
  }
}
