import { launchGateway } from '@archipelago/runtime';
import { Flags } from '@oclif/core';
import { ArchipelagoCommand } from '../base.js';

export default class Gateway extends ArchipelagoCommand {
  static override summary =
    'Run the HTTP file gateway (Pithos hashmap API, Swift v1 auth) in the foreground.';

  static override description =
    `Serves files (read-only maps of content-addressed blocks) over HTTP from the blockers of the \
configuration, or of a data directory laid out as the embedded default (--data DIR: DIR/maps and \
DIR/blocks). Stops cleanly on SIGTERM or SIGINT. "archipelago-gateway ARGS" is "archipelago \
gateway ARGS". See packages/gateway/README.md for the API.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> --port 8080 --user test,test:tester,testing',
    '<%= config.bin %> <%= command.id %> --data /var/lib/archipelago --token tk1,test',
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
    data: Flags.string({
      summary: "Serve DIR/maps and DIR/blocks instead of the configuration's blockers.",
      helpValue: 'DIR',
    }),
    maps: Flags.string({ summary: 'Maps directory (with --blocks, instead of --data).', helpValue: 'DIR' }),
    blocks: Flags.string({ summary: 'Blocks directory (with --maps, instead of --data).', helpValue: 'DIR' }),
    'block-size': Flags.integer({ min: 1, summary: 'Block size of new files, bytes (default 4 MiB).' }),
    'max-object-size': Flags.integer({ min: 1, summary: 'Largest object accepted, bytes (default 5 GiB).' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Gateway);
    const gw = await launchGateway({
      host: flags.host,
      port: flags.port,
      noAuth: flags['no-auth'],
      ...(flags.config !== undefined ? { config: flags.config } : {}),
      ...(flags.user ? { users: flags.user } : {}),
      ...(flags.token ? { tokens: flags.token } : {}),
      ...(flags['bridge-account'] ? { bridgeAccounts: flags['bridge-account'] } : {}),
      ...(flags['public-url'] ? { publicUrl: flags['public-url'] } : {}),
      ...(flags.data !== undefined ? { data: flags.data } : {}),
      ...(flags.maps !== undefined ? { maps: flags.maps } : {}),
      ...(flags.blocks !== undefined ? { blocks: flags.blocks } : {}),
      ...(flags['block-size'] !== undefined ? { blockSize: flags['block-size'] } : {}),
      ...(flags['max-object-size'] !== undefined ? { maxObjectSize: flags['max-object-size'] } : {}),
    });
    // Printed at start (the command runs until stopped): a line, or one JSON record with --json.
    this.say(`gateway listening on ${gw.gateway.url}`);
    if (this.jsonEnabled())
      process.stdout.write(`${JSON.stringify({ url: gw.gateway.url, port: gw.gateway.port })}\n`);
    await new Promise<void>((resolve) => {
      process.once('SIGTERM', resolve);
      process.once('SIGINT', resolve);
    });
    await gw.close();
  }
}
