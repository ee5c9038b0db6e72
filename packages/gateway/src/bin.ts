/**
 * `archipelago-gateway`: runs the HTTP file gateway over file blockers.
 *
 *   archipelago-gateway --data DIR [--host 127.0.0.1] [--port 8080] \
 *       [--user ACCOUNT,USER,KEY[,TOKEN]]... [--token TOKEN,ACCOUNT]... [--no-auth]
 *
 * `--data DIR` uses DIR/maps and DIR/blocks (the layout of the embedded `vlmc` default);
 * `--maps` and `--blocks` name them one by one. A Swift user "test:tester" with key "testing"
 * on account "test" is `--user test,test:tester,testing` (Swift user names contain a colon).
 */
import { hostname } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { FileBlocker } from '@archipelago/blocker-file';
import { Mapper } from '@archipelago/mapper';
import { type GatewayUser, startGateway } from './server.js';

const USAGE = `usage: archipelago-gateway (--data DIR | --maps DIR --blocks DIR) [--host H] [--port P]
       [--user ACCOUNT,USER,KEY[,TOKEN]]... [--token TOKEN,ACCOUNT]... [--no-auth]
       [--block-size BYTES] [--max-object-size BYTES] [--public-url URL] [--identity ID]
       [--bridge-account ACCOUNT]...`;

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      data: { type: 'string' },
      maps: { type: 'string' },
      blocks: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '8080' },
      user: { type: 'string', multiple: true },
      token: { type: 'string', multiple: true },
      'bridge-account': { type: 'string', multiple: true },
      'no-auth': { type: 'boolean', default: false },
      'block-size': { type: 'string' },
      'max-object-size': { type: 'string' },
      'public-url': { type: 'string' },
      identity: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const maps = values.maps ?? (values.data ? join(values.data, 'maps') : undefined);
  const blocks = values.blocks ?? (values.data ? join(values.data, 'blocks') : undefined);
  if (!maps || !blocks) throw new Error(`--data, or --maps and --blocks, are required\n${USAGE}`);
  const users: GatewayUser[] = (values.user ?? []).map((u) => {
    const [account, user, key, token] = u.split(',');
    if (!account || !user || !key) throw new Error(`bad --user ${u}: want ACCOUNT,USER,KEY[,TOKEN]`);
    return { account, user, key, ...(token ? { token } : {}) };
  });
  const tokens: Record<string, string> = {};
  for (const t of values.token ?? []) {
    const [token, account] = t.split(',');
    if (!token || !account) throw new Error(`bad --token ${t}: want TOKEN,ACCOUNT`);
    tokens[token] = account;
  }
  if (!values['no-auth'] && users.length === 0 && Object.keys(tokens).length === 0) {
    throw new Error('give --user or --token (or --no-auth to serve every account openly)');
  }
  const identity = values.identity ?? `${hostname()}_gateway`;
  const blockerm = new FileBlocker({ dir: maps, identity });
  const blockerb = new FileBlocker({ dir: blocks, identity });
  const mapper = new Mapper({ blockerm, blockerb });
  const num = (s: string | undefined, what: string) => {
    if (s === undefined) return undefined;
    const n = Number(s);
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`bad ${what} ${s}`);
    return n;
  };
  const gw = await startGateway({
    blockerm,
    blockerb,
    mapper,
    host: values.host,
    port: num(values.port, '--port') ?? 8080,
    auth: values['no-auth'] ? false : { users, tokens },
    ...(values['block-size'] ? { blocksize: num(values['block-size'], '--block-size') } : {}),
    ...(values['max-object-size']
      ? { maxObjectSize: num(values['max-object-size'], '--max-object-size') }
      : {}),
    ...(values['public-url'] ? { publicUrl: values['public-url'] } : {}),
    ...(values['bridge-account'] ? { bridgeAccounts: values['bridge-account'] } : {}),
  });
  process.stdout.write(`archipelago-gateway listening on ${gw.url}\n`);
  const stop = async () => {
    await gw.close();
    await mapper.close();
    await Promise.allSettled([blockerm.close(), blockerb.close()]);
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
