import { GATEWAY_ENV, launchGateway } from '@archipelago/runtime';
import { Flags } from '@oclif/core';
import { ArchipelagoCommand } from '../base.js';

export default class Gateway extends ArchipelagoCommand {
  static override summary =
    'Run the HTTP file gateway (Pithos hashmap API, Swift v1 auth) in the foreground.';

  static override description =
    `Serves files (read-only maps of content-addressed blocks) over HTTP from the blockers of the \
configuration, or of a data directory laid out as the embedded default (--data DIR: DIR/maps and \
DIR/blocks). Users and tokens come from --auth-file (or $ARCHIPELAGO_GATEWAY_AUTH_FILE) and \
$ARCHIPELAGO_GATEWAY_USERS / $ARCHIPELAGO_GATEWAY_TOKENS, never the command line. Stops cleanly on SIGTERM or SIGINT. "archipelago-gateway ARGS" is "archipelago \
gateway ARGS". See packages/gateway/README.md for the API.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> --port 8080 --auth-file /etc/archipelago/gateway.auth',
    'ARCHIPELAGO_GATEWAY_TOKENS=tk1,test <%= config.bin %> <%= command.id %> --data /var/lib/archipelago',
    '<%= config.bin %> <%= command.id %> --no-auth',
  ];

  static override flags = {
    host: Flags.string({ default: '127.0.0.1', summary: 'Address to listen on.' }),
    port: Flags.integer({ default: 8080, min: 0, max: 65535, summary: 'TCP port (0 picks one).' }),
    'auth-file': Flags.string({
      summary: `Users and tokens, one a line: "user ACCOUNT USER KEY [TOKEN]", "token TOKEN ACCOUNT" \
(mode 600 or 640; default $${GATEWAY_ENV.authFile}).`,
      helpValue: 'FILE',
    }),
    user: Flags.string({
      multiple: true,
      summary: `A Swift user (repeatable). The key shows in ps: prefer --auth-file or $${GATEWAY_ENV.users}.`,
      helpValue: 'ACCOUNT,USER,KEY[,TOKEN]',
    }),
    token: Flags.string({
      multiple: true,
      summary: `A pre-shared token (repeatable). It shows in ps: prefer --auth-file or $${GATEWAY_ENV.tokens}.`,
      helpValue: 'TOKEN,ACCOUNT',
    }),
    'token-lifetime': Flags.integer({
      min: 1,
      helpValue: 'SECONDS',
      summary: 'Seconds a token handed out at auth stays valid (X-Auth-Token-Expires; default 86400).',
    }),
    'headers-timeout': Flags.integer({
      min: 0,
      helpValue: 'SECONDS',
      summary: 'Seconds a client has to send a request head (default 60; 0: none); then 408.',
    }),
    'body-timeout': Flags.integer({
      min: 0,
      helpValue: 'SECONDS',
      summary: 'Seconds a request body may stall (default 30; 0: none); then 408, nothing stored.',
    }),
    'request-timeout': Flags.integer({
      min: 0,
      helpValue: 'SECONDS',
      summary: 'Seconds a whole request may take to arrive (default 0: no limit); then 408.',
    }),
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
    if (flags.user || flags.token) hideSecretArgs(this.config.bin);
    const gw = await launchGateway({
      host: flags.host,
      port: flags.port,
      noAuth: flags['no-auth'],
      ...(flags.config !== undefined ? { config: flags.config } : {}),
      ...(flags.user ? { users: flags.user } : {}),
      ...(flags.token ? { tokens: flags.token } : {}),
      ...(flags['auth-file'] !== undefined ? { authFile: flags['auth-file'] } : {}),
      ...(flags['token-lifetime'] !== undefined ? { tokenLifetime: flags['token-lifetime'] } : {}),
      ...(flags['headers-timeout'] !== undefined ? { headersTimeout: flags['headers-timeout'] } : {}),
      ...(flags['body-timeout'] !== undefined ? { bodyTimeout: flags['body-timeout'] } : {}),
      ...(flags['request-timeout'] !== undefined ? { requestTimeout: flags['request-timeout'] } : {}),
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

/** The flags whose values are secrets. */
const SECRET_FLAGS = ['--user', '--token'];

/**
 * Keys or tokens came on the command line, where every local user reads them (`ps`,
 * `/proc/PID/cmdline`): warns, and overwrites the command line the kernel shows with one whose
 * secret values are `***` (Node's `process.title` rewrites the argument area). Other users could
 * still read them between exec and this point: the warning says what to use instead.
 */
function hideSecretArgs(bin: string): void {
  process.stderr.write(
    `${bin}: warning: --user/--token put keys on the command line, readable by every local user ` +
      `(ps, /proc/${process.pid}/cmdline); use --auth-file FILE, or ${GATEWAY_ENV.users} / ` +
      `${GATEWAY_ENV.tokens} in the environment\n`,
  );
  const args = process.argv.slice(1);
  const shown = args.map((a, i) => {
    if (SECRET_FLAGS.includes(args[i - 1] ?? '') && !a.startsWith('-')) return '***';
    const eq = a.indexOf('=');
    return eq > 0 && SECRET_FLAGS.includes(a.slice(0, eq)) ? `${a.slice(0, eq)}=***` : a;
  });
  process.title = [process.argv0, ...shown].join(' ');
}
